"""External game engines as scenarios: PettingZoo AEC environments (`aec_scenario`),
OpenSpiel games (`openspiel_scenario`, needs open-spiel) and TextArena games
(`textarena_scenario`, needs textarena); the last two are the `games` extra
(`pip install 'multiagent-rl[games]'`), imported only when their wrapper is called, so
this package imports without it. All three build their scenario with `game_scenario`.

>>> from multiagent_rl.games import openspiel_scenario, random_action
>>> kuhn = openspiel_scenario("kuhn_poker", scripted={"player_1": random_action})   # doctest: +SKIP
"""

from .common import discrete_move, game_scenario
from .openspiel import openspiel_scenario, random_action
from .pettingzoo_aec import GameState, aec_scenario, legal_moves, random_legal_move
from .textarena import textarena_scenario

__all__ = [
    "GameState", "aec_scenario", "discrete_move", "game_scenario", "legal_moves", "openspiel_scenario",
    "random_action", "random_legal_move", "textarena_scenario",
]
