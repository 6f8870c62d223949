"""Rewards as weighted, named terms (TRL's `reward_funcs` with `reward_weights`): the total
trains, and every term is kept per agent, so each part of a reward can be watched moving.

>>> reward = weighted(
...     RewardTerm("correct", lambda task, ep: float(answers_match(ep.team_answer, task.answer)), 0.9),
...     RewardTerm("format", lambda task, ep: bare_number_replies(ep, AGENTS), 0.1),
... )                                                                              # doctest: +SKIP
>>> Scenario(..., reward=reward)                                                   # doctest: +SKIP

A term returns {agent: value}, or one float that every agent gets. Plain reward functions
(task, episode) -> {agent: float} keep working; they log as one term, `total`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .records import Episode, Task

TermFn = Callable[[Task, Episode], "Mapping[str, float] | float"]


class RewardTermError(ValueError):
    """A reward term is declared wrongly or returned something unusable."""


@dataclass(frozen=True)
class RewardTerm:
    """One named part of a reward; the total is the weighted sum of the terms."""

    name: str
    fn: TermFn
    weight: float = 1.0


class WeightedReward:
    """A reward function made of terms: `reward(task, episode)` is the weighted total per agent,
    `reward.parts(task, episode)` each term's (unweighted) value per agent."""

    def __init__(self, terms: Sequence[RewardTerm]):
        names = [t.name for t in terms]
        if not terms:
            raise RewardTermError("a weighted reward needs at least one RewardTerm")
        for t in terms:
            if not isinstance(t, RewardTerm):
                raise RewardTermError(f"reward terms must be RewardTerm, got {t!r}")
            if not t.name or "/" in t.name or names.count(t.name) > 1:
                raise RewardTermError(f"reward term names must be unique, non-empty and without '/': {names}")
            if not callable(t.fn) or not math.isfinite(float(t.weight)):
                raise RewardTermError(f"reward term {t.name!r} needs a callable and a finite weight")
        self.terms = list(terms)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def parts(self, task: Task, episode: Episode) -> dict[str, dict[str, float]]:
        agents = list(episode.teams)
        out = {}
        for term in self.terms:
            value = term.fn(task, episode)
            out[term.name] = dict.fromkeys(agents, float(value)) if isinstance(value, int | float) else dict(value)
        return out

    def total(self, parts: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        agents = {a for values in parts.values() for a in values}
        return {a: sum(t.weight * float(parts[t.name].get(a, 0.0)) for t in self.terms) for a in sorted(agents)}

    def __call__(self, task: Task, episode: Episode) -> dict[str, float]:
        return self.total(self.parts(task, episode))


def weighted(*terms: RewardTerm) -> WeightedReward:
    """`weighted(RewardTerm("correct", fn, 0.9), RewardTerm("format", fn2, 0.1))`."""
    return WeightedReward(terms)
