"""External game engines as scenarios: PettingZoo AEC environments (`aec_scenario`)."""

from .pettingzoo_aec import GameState, aec_scenario, discrete_move, legal_moves, random_legal_move

__all__ = ["GameState", "aec_scenario", "discrete_move", "legal_moves", "random_legal_move"]
