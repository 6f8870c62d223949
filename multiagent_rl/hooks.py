"""What a scenario's run-time hooks see and return, for episodes the environment drives.

A scenario with a fixed `schedule` needs none of this. A game engine decides at run time
whose turn it is, what each player sees and when the game ends; a scenario hosts it with
`Scenario(turn_order=..., init_state=..., observe=..., act=..., max_turns=...)`, each hook
receiving the episode so far as an `EpisodeView`:

>>> def turn_order(view):                       # doctest: +SKIP
...     return [] if view.state.over else [view.state.to_move]
>>> def act(view, agent, text):                 # doctest: +SKIP
...     ok = view.state.play(agent, text)
...     return Outcome(reward=0.0 if ok else -0.1, valid=ok, event={"move": text})
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import Task, Turn


@dataclass
class EpisodeView:
    """The episode so far: its task, per-episode `state` (what `init_state` made; hooks may
    change it), every turn taken, the number of turn steps so far, and the episode's rng."""

    task: Task
    state: Any
    turns: list[Turn]
    step: int
    rng: random.Random
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    """What an action did, as the `act` hook reports it (None from the hook means: nothing).

    reward: this turn's reward for the acting agent (a float), or {agent: reward} for any
        agents (the acting one's lands on its turn; the others' count in their episode reward).
    valid: False marks the move invalid (the turn is logged as such).
    trainable: False: the turn yields no training sample (None: trained).
    event: a dict kept in the episode record (engine facts: the move, the board, ...).
    done: the episode ends after this turn step.
    winner: the winning team, or "draw", once the episode is decided.
    term: the name the reward is kept under in the episode's ledger.
    result: a game's result once decided, {agent: final reward}: written once, as the
        episode's final ledger lines (term "result"); the scenario's `reward` is then not called.
    """

    reward: float | Mapping[str, float] = 0.0
    valid: bool = True
    trainable: bool | None = None
    event: dict[str, Any] | None = None
    done: bool = False
    winner: str | None = None
    term: str = "turn"
    result: Mapping[str, float] | None = None
