"""kuhn_poker (competitive game): OpenSpiel's Kuhn poker, the engine dealing the cards and
deciding turns, legal moves and chips. A model plays `player_0` against a scripted player
that picks a random legal move (or another model, `opponent="model"`: self-play).

Three cards (Jack < Queen < King), one each, an ante of 1 chip. Players take turns to Pass
or Bet 1 chip; facing a bet, Bet calls and Pass folds. The reward is the chips won or lost
(+-1 or +-2); a reply that is no legal move forfeits at the worst loss (-2, the other player
+2), so it is never cheaper than a legal move. Kuhn poker has 12 information states, so a
policy's exploitability is computed exactly (`multiagent_rl.games.exploitability`): the
uniform random policy's is 0.458, a Nash equilibrium's 0.

Worked example of: an OpenSpiel game with a readable rendering of what a player knows
(`render`), the seat a league alternates, and play measured by exploitability.
"""

from __future__ import annotations

from multiagent_rl import ScenarioError
from multiagent_rl.games.openspiel import openspiel_scenario, random_action

CARDS = ("Jack", "Queen", "King")
PLAYERS = ("player_0", "player_1")
OPPONENTS = ("random", "model")
SYSTEM = (
    "You play Kuhn poker as {agent}. Cards: Jack < Queen < King; each player antes 1 chip and gets "
    "one card. Players take turns to Pass or Bet 1 chip. Facing a bet, Bet calls and Pass folds. "
    "At the showdown the higher card takes the pot. Reply with only Pass or Bet."
)


def render(state, player: int) -> str:
    """The player's card and the moves so far, in words (OpenSpiel's string is "1pb")."""
    known = state.information_state_string(player)  # the card's index, then p / b per move
    moves = [f"player_{i % 2} {'passed' if m == 'p' else 'bet'}" for i, m in enumerate(known[1:])]
    return f"Your card: {CARDS[int(known[0])]}. " + (f"So far: {', '.join(moves)}." if moves else "You move first.")


def make_scenario(opponent: str = "random"):
    if opponent not in OPPONENTS:
        raise ScenarioError(f"kuhn_poker: opponent={opponent!r}; use one of {', '.join(OPPONENTS)}")
    return openspiel_scenario(
        "kuhn_poker",
        name="kuhn_poker",
        scripted={"player_1": random_action} if opponent == "random" else None,
        system_prompts={a: SYSTEM.format(agent=a) for a in PLAYERS},
        render=render,
        max_new_tokens=4,
        max_turns=3,
        description="Kuhn poker from OpenSpiel: a model as player_0 against a random player (or another model)",
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 8, "group_size": 4,
            "lr": 1e-3, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 100, "save_every": 10,
        },
    )
