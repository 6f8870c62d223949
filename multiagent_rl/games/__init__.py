"""External game engines as scenarios: PettingZoo AEC environments (`aec_scenario`),
OpenSpiel games (`openspiel_scenario`, needs open-spiel) and TextArena games
(`textarena_scenario`, needs textarena); the last two are the `games` extra."""

from .pettingzoo_aec import GameState, aec_scenario, discrete_move, legal_moves, random_legal_move

__all__ = ["GameState", "aec_scenario", "discrete_move", "legal_moves", "random_legal_move"]
