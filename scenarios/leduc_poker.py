"""leduc_poker (competitive game): OpenSpiel's Leduc poker, the engine dealing the cards and
deciding turns, legal moves and chips. A model plays `player_0` against a scripted player
that picks a random legal move (or another model, `opponent="model"`: self-play).

Six cards (Jack, Queen, King in two suits), one private card each, an ante of 1 chip. Two
betting rounds, player_0 first in each; after the first a board card is dealt face up. A
raise is 2 chips in round 1 and 4 in round 2, at most 2 raises a round; Call matches the
opponent (with nothing to match, it checks); Fold, legal only facing a raise, gives up the
pot. At the showdown a card that pairs the board wins, else the higher card; equal ranks
split. The reward is the chips won or lost (at most 13); a reply that is no legal move
forfeits at the worst loss (-13, the other player +13), so it is never cheaper than folding.
Leduc has 936 information states, so a policy's exploitability is computed exactly
(`multiagent_rl.games.exploitability`): the uniform random policy's is 2.374.

Worked example of: rendering a game from OpenSpiel's information state string alone, so the
model is shown one thing per information state and nothing the player does not know.
"""

from __future__ import annotations

import re

from multiagent_rl import ScenarioError
from multiagent_rl.games.openspiel import openspiel_scenario, random_action

RANKS = ("Jack", "Queen", "King")
SUITS = ("hearts", "spades")  # OpenSpiel's card c is rank c // 2, suit c % 2; suits never decide a hand
MOVES = {"0": "folded", "1": "called", "2": "raised"}  # OpenSpiel's actions: Fold, Call, Raise
PLAYERS = ("player_0", "player_1")
OPPONENTS = ("random", "model")
SYSTEM = (
    "You play Leduc poker as {agent}. The deck has six cards: Jack, Queen and King in two suits. "
    "Each player antes 1 chip and gets one private card. There are two betting rounds, player_0 "
    "moving first in each; after round 1 a board card is dealt face up. Raise puts in 2 chips more "
    "than the opponent in round 1 and 4 more in round 2, at most 2 raises per round. Call matches "
    "the opponent's chips (with nothing to match, it checks). Fold, facing a raise, gives up the pot. "
    "At the showdown a card that pairs the board card wins; otherwise the higher card wins (suits "
    "never matter; equal cards split the pot). Reply with only Fold, Call or Raise."
)
FIELD = re.compile(r"\[(\w+):? ?([^\]]*)\]")  # "[Private: 3]", "[Round 2]", "[Round1: 2 1]"


def card(index: str) -> str:
    return f"{RANKS[int(index) // 2]} of {SUITS[int(index) % 2]}"


def render(state, player: int) -> str:
    """What the player knows, in words, read from OpenSpiel's information state string alone
    ("[Observer: 0][Private: 2][Round 2][Player: 0][Pot: 6][Money: 97 97][Public: 5][Round1: 2 1][Round2: ]"),
    so one information state is always one text: the card, the board, each round's bets, the chips."""
    known = dict(FIELD.findall(state.information_state_string(player)))
    money = [int(m) for m in known["Money"].split()]
    put_in = [100 - m for m in money]  # every player starts with 100 chips
    lines = [f"Your card: {card(known['Private'])}."]
    if "Public" in known:
        lines.append(f"Board card: {card(known['Public'])}. Round 2 of 2.")
    else:
        lines.append("Board card: not dealt yet. Round 1 of 2.")
    for r in ("1", "2"):
        moves = known[f"Round{r}"].split()
        if r == "1" or "Public" in known:  # each round, player_0 moves first
            said = ", ".join(f"player_{i % 2} {MOVES[m]}" for i, m in enumerate(moves)) or "none yet"
            lines.append(f"Round {r} bets: {said}.")
    lines.append(f"Chips in the pot: player_0 {put_in[0]}, player_1 {put_in[1]}.")
    owed = put_in[1 - player] - put_in[player]
    if owed > 0:
        lines.append(f"Calling costs you {owed} chips.")
    return " ".join(lines)


def make_scenario(opponent: str = "random"):
    if opponent not in OPPONENTS:
        raise ScenarioError(f"leduc_poker: opponent={opponent!r}; use one of {', '.join(OPPONENTS)}")
    return openspiel_scenario(
        "leduc_poker",
        name="leduc_poker",
        scripted={"player_1": random_action} if opponent == "random" else None,
        system_prompts={a: SYSTEM.format(agent=a) for a in PLAYERS},
        render=render,
        max_new_tokens=4,
        max_turns=8,  # the longest game: two rounds of call, raise, raise, call
        description="Leduc poker from OpenSpiel: a model as player_0 against a random player (or another model)",
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 8, "group_size": 4,
            "lr": 1e-3, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 100, "save_every": 10,
        },
    )
