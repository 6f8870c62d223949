"""Rewards: the helpers a reward function is written with (`team_reward`, `zero_sum`,
`blend`, `answered`, ...), the check every reward passes (`check_rewards`), and rewards as
weighted, named terms (TRL's `reward_funcs` with `reward_weights`): the total trains, and
every term is kept per agent, so each part of a reward can be watched moving.

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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .answers import is_bare_number
from .errors import ScenarioError
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


# ----- reward helpers ---------------------------------------------------------
def majority_answer(episode: Episode, agents: Iterable[str]) -> str | None:
    """Most common answer among `agents`' latest messages; ties go to the earliest agent listed."""
    latest: dict[str, str | None] = {}
    for turn in episode.turns:
        latest[turn.agent] = turn.message.answer
    votes = [latest.get(a) for a in agents if latest.get(a) is not None]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(v for v in votes if counts[v] == best)


def check_rewards(raw: Mapping[str, float], agents: Sequence[str], where: str = "reward") -> dict[str, float]:
    """`raw` as one finite float per agent of `agents`, else ScenarioError naming `where` and the
    bad entry (a missing or unknown agent, a value that is no number or not finite)."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where} must return a dict agent -> float, got {type(raw).__name__}")
    missing = [a for a in agents if a not in raw]
    if missing:
        raise ScenarioError(f"{where} is missing agents: {', '.join(missing)}")
    extra = [a for a in raw if a not in agents]
    if extra:
        raise ScenarioError(f"{where} names unknown agents: {', '.join(map(str, extra))}")
    out: dict[str, float] = {}
    for agent in agents:
        try:
            value = float(raw[agent])
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{where} for {agent!r} is not a number: {raw[agent]!r}") from exc
        if not math.isfinite(value):
            raise ScenarioError(f"{where} for {agent!r} is {value}; rewards must be finite")
        out[agent] = value
    return out


def team_reward(value: float, agents: Iterable[str]) -> dict[str, float]:
    """Every member gets the same value: `team_reward(1.0, ["a", "b"]) == {"a": 1.0, "b": 1.0}`."""
    return {a: float(value) for a in agents}


def individual_rewards(values: Mapping[str, float]) -> dict[str, float]:
    """Each agent its own value (a copy, as floats)."""
    return {a: float(v) for a, v in values.items()}


def latest_answers(episode: Episode, agents: Iterable[str]) -> dict[str, str | None]:
    """Each agent's parsed answer in its latest message (None: it never answered)."""
    latest: dict[str, str | None] = dict.fromkeys(agents)
    for turn in episode.turns:
        if turn.agent in latest:
            latest[turn.agent] = turn.message.answer
    return latest


def answered(episode: Episode, agents: Iterable[str]) -> dict[str, float]:
    """1.0 for each agent whose latest message carries a parseable answer, else 0.0
    (the usual format bonus, to blend with a team reward)."""
    return {a: float(answer is not None) for a, answer in latest_answers(episode, agents).items()}


def reply_share(episode: Episode, agents: Iterable[str], test: Callable[[str], bool]) -> dict[str, float]:
    """For each agent, the share of its messages whose text passes `test` (0.0 if it never
    spoke): the shape of a format bonus that judges every reply, not only the last."""
    counts = {a: [0, 0] for a in agents}
    for turn in episode.turns:
        if turn.agent in counts:
            counts[turn.agent][0] += bool(test(turn.message.text))
            counts[turn.agent][1] += 1
    return {a: passed / total if total else 0.0 for a, (passed, total) in counts.items()}


def bare_number_replies(episode: Episode, agents: Iterable[str]) -> dict[str, float]:
    """For each agent, the share of its messages that are a number and nothing else (0.0 if
    it never spoke): a format bonus for "reply with only the number" that, unlike
    `answered`, does not pay for a long reply that happens to end in a number."""
    return reply_share(episode, agents, is_bare_number)


def zero_sum(team_scores: Mapping[str, float], teams: Mapping[str, str]) -> dict[str, float]:
    """Zero-sum between teams: each team gets its score minus the mean team score,
    split evenly among its members, so all agents' rewards sum to zero.

    >>> zero_sum({"red": 3.0, "blue": 1.0}, {"a": "red", "b": "blue"})
    {'a': 1.0, 'b': -1.0}
    """
    members: dict[str, list[str]] = {}
    for agent, team in teams.items():
        members.setdefault(team, []).append(agent)
    if not members:
        raise ScenarioError("zero_sum needs at least one agent in a team")
    unknown = [t for t in members if t not in team_scores]
    if unknown:
        raise ScenarioError(f"zero_sum: no score for team {unknown[0]!r}; scores given for {sorted(team_scores)}")
    mean = sum(team_scores[t] for t in members) / len(members)
    return {
        agent: (team_scores[team] - mean) / len(members[team])
        for team, agents in members.items()
        for agent in agents
    }


def blend(first: Mapping[str, float], second: Mapping[str, float], weight: float) -> dict[str, float]:
    """(1 - weight) * first + weight * second, per agent (e.g. team and individual rewards)."""
    if set(first) != set(second):
        raise ScenarioError(f"blend: agents differ: {sorted(first)} vs {sorted(second)}")
    if not 0.0 <= weight <= 1.0:
        raise ScenarioError(f"blend weight must be in [0, 1], got {weight}")
    return {a: (1 - weight) * float(first[a]) + weight * float(second[a]) for a in first}
