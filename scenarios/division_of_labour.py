"""division_of_labour (cooperative): a planner splits "(a + b) + (c + d)" between two
workers, each worker adds its pair, and an aggregator adds the workers' results.
Only the planner sees all four numbers; by default each worker also sees its own
pair privately, and the aggregator sees nothing but the workers' messages. Team
reward = the aggregator's correctness, plus a small individual format bonus.

Worked example of: private per-agent views (`Task.private`), a per-round graph
function (planner -> workers, then workers -> aggregator), a one-agent team
answer (`team_answer=`), per-role token budgets, and roles sharing an adapter
(`shared_workers=True`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from multiagent_rl import (
    Episode,
    MessageGraph,
    Role,
    Scenario,
    ScenarioError,
    Task,
    answered,
    answers_match,
    blend,
    majority_answer,
    parse_number_answer,
    star,
    team_reward,
)

WORKERS = ["worker_1", "worker_2"]
AGENTS = ["planner", *WORKERS, "aggregator"]

PLANNER = (
    "You are the planner. You alone see the numbers. Send each worker its pair, "
    "like: worker_1: 3 + 4, worker_2: 5 + 2"
)
WORKER = "You are {name}. Add the two numbers of your part. Reply with only the number."
AGGREGATOR = (
    "You are the aggregator. Add the two numbers the workers send you. Reply with only the number."
)
PROMPT = (
    "Compute (a + b) + (c + d) as a team: worker_1 adds a + b, worker_2 adds c + d, "
    "the aggregator adds their two results."
)


def make_sum_task(rng: random.Random, max_value: int = 9, workers_see_parts: bool = True) -> Task:
    """One "(a + b) + (c + d)" task; the numbers live only in private views."""
    a, b, c, d = (rng.randint(1, max_value) for _ in range(4))
    private = {"planner": f"The numbers: ({a} + {b}) + ({c} + {d})"}
    if workers_see_parts:
        private["worker_1"] = f"Your part: {a} + {b}"
        private["worker_2"] = f"Your part: {c} + {d}"
    return Task(
        key=f"({a}+{b})+({c}+{d})",
        prompt=PROMPT,
        answer=str(a + b + c + d),
        private=private,
        meta={"numbers": [a, b, c, d], "parts": [a + b, c + d]},
    )


def graph_for(round_index: int) -> MessageGraph:
    """Round 0: the planner briefs both workers; later: the workers report to the aggregator."""
    if round_index == 0:
        return star("planner", WORKERS, direction="out")
    return star("aggregator", WORKERS, direction="in")


def aggregator_answer(episode: Episode) -> str | None:
    """The team answer is the aggregator's latest answer, whatever the others said."""
    return majority_answer(episode, ["aggregator"])


def make_scenario(
    max_value: int = 9,
    workers_see_parts: bool = True,
    shared_workers: bool = False,
    format_bonus: float = 0.1,
) -> Scenario:
    """Build the division-of-labour scenario (options settable as `--set scenario.max_value=20`)."""
    if max_value < 2:
        raise ScenarioError(f"division_of_labour: max_value must be at least 2 (got {max_value})")
    worker_adapter = "worker" if shared_workers else None
    roles = [
        Role("planner", PLANNER, max_new_tokens=32),
        *(Role(w, WORKER.format(name=w), adapter=worker_adapter) for w in WORKERS),
        Role("aggregator", AGGREGATOR),
    ]

    def sample(rng: random.Random) -> Task:
        return make_sum_task(rng, max_value=max_value, workers_see_parts=workers_see_parts)

    def reward(task: Task, episode: Episode) -> dict[str, float]:
        correct = float(answers_match(episode.team_answer, task.answer))
        # Bonus: the agent's message carries a parseable number (pays for the format only).
        return blend(team_reward(correct, AGENTS), answered(episode, AGENTS), format_bonus)

    schedule: Sequence[Sequence[str]] = [["planner"], WORKERS, ["aggregator"]]
    return Scenario(
        name="division_of_labour",
        description=(
            "A planner splits (a+b)+(c+d) between two workers; an aggregator adds their "
            "results; team reward = correctness."
        ),
        roles=roles,
        graph=graph_for,
        schedule=schedule,
        make_task=sample,
        reward=reward,
        team_answer=aggregator_answer,
        parse=parse_number_answer,
        max_new_tokens=24,
        options={
            "max_value": max_value,
            "workers_see_parts": workers_see_parts,
            "shared_workers": shared_workers,
            "format_bonus": format_bonus,
        },
    )
