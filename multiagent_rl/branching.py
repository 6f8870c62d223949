"""Branched rollouts: where an episode forks into alternatives, checked against a scenario
before any model loads.

A plan is a list of forks (`rollout.branching`). At a fork the running episode is copied
`n` times (its turns, inboxes, scenario state and a random stream of each branch's own)
and every copy continues in the same lockstep rollout, so a task's episodes form a tree:
its leaves are the finished episodes, each inner node a turn the branches below share.
The tree estimator (`trainers/tree.py`) compares sibling subtrees' returns.

>>> plan = [Fork(step=0, n=3), Fork(step=1, n=2), Fork(agent="aggregator", n=2)]  # doctest: +SKIP
>>> leaves_per_task(plan, group_size=1)                                          # doctest: +SKIP
12
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ScenarioError


class Fork(BaseModel):
    """One place where every episode forks: before turn step `step`, or before `agent`'s
    first turn (for scenarios whose engine decides who moves when)."""

    model_config = ConfigDict(extra="forbid")
    step: int | None = Field(None, ge=0, description="Fork before this turn step (0: the first).")
    agent: str | None = Field(None, description="Fork before this agent's first turn (instead of a step).")
    n: int = Field(2, ge=2, description="The alternatives: the episode continues n times from here.")
    resample: list[str] | None = Field(
        None,
        description="Only these agents of the turn step are sampled anew in each alternative; the other acting "
        "agents' replies are held fixed across them (a counterfactual baseline for agents that act together). "
        "None: every acting agent.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> Fork:
        if (self.step is None) == (self.agent is None):
            raise ValueError("a fork names a turn step (step: N) or an agent (agent: NAME), exactly one")
        if self.resample is not None and not self.resample:
            raise ValueError("resample: [] re-samples nobody; name the agents, or leave it out for every acting agent")
        return self

    def where(self) -> str:
        return f"step {self.step}" if self.step is not None else f"{self.agent}'s first turn"


class MoveForks(BaseModel):
    """Forks per legal move (`rollout.move_forks`): at a decision of a trainable agent in a
    game that lists its legal moves (`Scenario(legal_moves=...)`), the episode forks once per
    legal move, each branch playing its move (forced: nothing is generated), and every branch
    goes on with the current policies. The leaves below a decision give each move's value
    there under today's policy; the `all_actions` trainer learns from them. Where several
    model agents act at once, or one move is legal, the decision is sampled as usual."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    probability: float = Field(
        1.0, gt=0, le=1, description="Each eligible decision forks with this probability (1: every decision); "
        "the others are sampled. Below 1 the tree stays small in long games."
    )
    max_forks: int | None = Field(
        None, ge=1, description="At most this many move forks along one path from the root (None: no bound). "
        "A tree has at most (legal moves)^max_forks leaves per episode."
    )


def leaves_per_task(plan: Sequence[Fork], group_size: int) -> int:
    """Finished episodes per task when every fork is reached: group_size x every fork's n
    (fewer where an episode ends before a fork)."""
    return group_size * math.prod(f.n for f in plan)


def check_plan(plan: Sequence[Fork], scenario) -> None:
    """Refuse a plan this scenario cannot play, naming the fork: an unknown agent, a step past
    the scenario's last, a fork only scripted players would fill, two forks at one step, or a
    scenario state that can be neither deep-copied nor forked by the scenario's `fork` hook."""
    if not plan:
        return
    agents = list(scenario.agents)
    scripted = {r.name for r in scenario.roles if r.scripted}
    steps = scenario.num_rounds
    seen_steps: dict[int, int] = {}
    for i, fork in enumerate(plan):
        where = f"rollout.branching[{i}] ({fork.where()})"
        for name in [*([fork.agent] if fork.agent else []), *(fork.resample or [])]:
            if name not in agents:
                raise ScenarioError(f"{where} names unknown agent {name!r}; scenario {scenario.name!r} has {', '.join(agents)}")
            if name in scripted:
                raise ScenarioError(f"{where} branches the scripted role {name!r}: a Python player's reply does not vary")
        if fork.step is None:
            continue
        if fork.step >= steps:
            raise ScenarioError(f"{where}: scenario {scenario.name!r} has {steps} turn steps (0-{steps - 1})")
        if fork.step in seen_steps:
            raise ScenarioError(f"{where}: rollout.branching[{seen_steps[fork.step]}] forks at the same step; give one fork its n")
        seen_steps[fork.step] = i
        if scenario.schedule is not None:
            acting = list(scenario.schedule[fork.step])
            if all(a in scripted for a in acting):
                raise ScenarioError(f"{where}: only scripted roles act then ({', '.join(acting)}); nothing would vary")
            idle = [a for a in fork.resample or [] if a not in acting]
            if idle:
                raise ScenarioError(f"{where}: {idle[0]!r} does not act at step {fork.step} (acting: {', '.join(acting)})")
    check_forkable(scenario)


def check_forkable(scenario) -> None:
    """Fork one fresh episode of `scenario` as a rollout would, so a state that cannot be
    copied is found before any model loads."""
    env = scenario.make_env(seed=0)
    env.reset(seed=0)
    env.fork(seed=1)


def fork_state(scenario, state):
    """A branch's own copy of a scenario's per-episode state: the scenario's `fork` hook
    (an engine's clone) where it gives one, else a deep copy."""
    if state is None:
        return None
    if scenario.fork is not None:
        return scenario.fork(state)
    try:
        return copy.deepcopy(state)
    except Exception as exc:  # noqa: BLE001 - any copy failure means the same thing to the user
        raise ScenarioError(
            f"scenario {scenario.name!r}: its episode state ({type(state).__name__}) cannot be deep-copied "
            f"({type(exc).__name__}: {exc}); give Scenario(fork=...), a function state -> an independent copy "
            "(an engine's clone), to branch its episodes"
        ) from exc
