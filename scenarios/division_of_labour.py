"""division_of_labour (cooperative): "(a + b) + (c + d)" split across a team. Each of two
workers privately sees its own pair and adds it; an aggregator, who sees no numbers,
adds the two results the workers send it. With `planner=True` a planner who alone sees
all four numbers comes first and briefs the workers (add `workers_see_parts=False` and
the workers depend on that brief). With `solo=True` one agent, the solver, sees the whole
"(a + b) + (c + d)" and answers the total: the single-agent baseline on the same tasks
(the same held-out tasks for the same seed) and the same reward scale.

Reward: the team's correctness (the aggregator's answer), blended with each agent's
own job done right (`own_weight`: a worker's sum of its pair, the aggregator's sum of
what it received, the planner's and the solver's team outcome), plus a small format
bonus. The own-job part tells each agent what *it* did, which a shared outcome alone
does not.

Worked example of: private per-agent views (`Task.private`), a per-round graph
function, a one-agent team answer (`team_answer=`), per-role token budgets, roles
sharing an adapter (`shared_workers=True`) and per-agent reward shaping.
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
    bare_number_replies,
    from_edges,
    latest_answers,
    majority_answer,
    parse_number_answer,
    star,
)
from scenarios.twins import TRAIN_DEFAULTS, blended_reward

WORKERS = ["worker_1", "worker_2"]

PLANNER = (
    "You are the planner. You alone see the numbers. Send each worker its pair, "
    "like: worker_1: 3 + 4, worker_2: 5 + 2"
)
WORKER = "You are {name}. Add the two numbers of your part. Reply with only the number."
AGGREGATOR = (
    "You are the aggregator. Add the two numbers the workers send you. Reply with only the number."
)
# No shared task text: a 135M model echoes the first line it reads, so each agent's view
# ends in its own question (the worker's private sum, the aggregator's turn instruction).
PROMPT = ""
AGGREGATE = "What is the sum of the workers' two numbers?"
SOLVER = "You are the solver. Add the four numbers. Reply with only the number."


def make_sum_task(rng: random.Random, max_value: int = 9, workers_see_parts: bool = True, planner: bool = True,
                  solo: bool = False) -> Task:
    """One "(a + b) + (c + d)" task; the numbers live only in private views. The options
    change the views only: the same rng draws the same key and answer whatever they are."""
    a, b, c, d = (rng.randint(1, max_value) for _ in range(4))
    private = {"planner": f"The numbers: ({a} + {b}) + ({c} + {d})"} if planner else {}
    if solo:
        private = {"solver": f"What is ({a} + {b}) + ({c} + {d})?"}
    elif workers_see_parts:
        private["worker_1"] = f"Your part: what is {a} + {b}?"
        private["worker_2"] = f"Your part: what is {c} + {d}?"
    return Task(
        key=f"({a}+{b})+({c}+{d})",
        prompt=PROMPT,
        answer=str(a + b + c + d),
        private=private,
        meta={"numbers": [a, b, c, d], "parts": [a + b, c + d]},
    )


def graph_maker(planner: bool, share: str):
    """With a planner, round 0: planner -> workers; then workers -> aggregator."""

    def graph_for(round_index: int) -> MessageGraph:
        if planner and round_index == 0:
            return star("planner", WORKERS, direction="out")
        return star("aggregator", WORKERS, direction="in", visibility=share)

    return graph_for


def aggregator_answer(episode: Episode) -> str | None:
    """The team answer is the aggregator's latest answer, whatever the others said."""
    return majority_answer(episode, ["aggregator"])


def solver_answer(episode: Episode) -> str | None:
    """The solo team answer: its one solver's."""
    return majority_answer(episode, ["solver"])


def own_jobs(task: Task, episode: Episode, agents: Sequence[str], team_correct: float) -> dict[str, float]:
    """1.0 for each agent whose own step was right: a worker's sum of its pair, the
    aggregator's sum of the numbers it received (right even if a worker was wrong);
    the planner's job has no check of its own, so it gets the team outcome."""
    said = latest_answers(episode, agents)
    parts = dict(zip(WORKERS, task.meta["parts"], strict=True))
    jobs = {"planner": team_correct}
    for worker in WORKERS:
        jobs[worker] = float(answers_match(said[worker], str(parts[worker])))
    received = [said[w] for w in WORKERS]
    try:
        expected = str(sum(int(x) for x in received))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        expected = None  # a worker sent no whole number: there was nothing sound to add
    jobs["aggregator"] = float(expected is not None and answers_match(said["aggregator"], expected))
    return {a: jobs[a] for a in agents}


def correctness(task: Task, episode: Episode) -> float:
    """1.0 when the team answer (the aggregator's, or the solver's) is the total."""
    return float(answers_match(episode.team_answer, task.answer))


def make_solo_scenario(max_value: int, own_weight: float, format_bonus: float) -> Scenario:
    """One solver on the team's tasks: the same task draws, its own job the team's
    correctness (it has no step of its own to check), the format bonus for a bare number."""

    def sample(rng: random.Random) -> Task:
        return make_sum_task(rng, max_value=max_value, planner=False, solo=True)

    def own(task: Task, episode: Episode) -> dict[str, float]:
        return {"solver": correctness(task, episode)}

    def format_only(task: Task, episode: Episode) -> dict[str, float]:
        return bare_number_replies(episode, ["solver"])

    return Scenario(
        name="division_of_labour",
        description="One solver adds all four numbers of (a+b)+(c+d): the single-agent baseline on the team's tasks.",
        roles=[Role("solver", SOLVER)],
        graph=from_edges([], agents=["solver"]),  # a lone solver hears no one
        schedule=[["solver"]],
        make_task=sample,
        reward=blended_reward("division_of_labour", correctness, own, format_only, own_weight, format_bonus),
        team_answer=solver_answer,
        parse=parse_number_answer,
        max_new_tokens=24,
        train_defaults=TRAIN_DEFAULTS,
    )


def make_scenario(
    max_value: int = 9,
    planner: bool = False,
    workers_see_parts: bool = True,
    shared_workers: bool = False,
    share: str = "answer",
    own_weight: float = 0.5,
    format_bonus: float = 0.1,
    solo: bool = False,
) -> Scenario:
    """Build the division-of-labour scenario (options settable as `--set scenario_options.max_value=20`).

    share: what the aggregator sees of a worker's message, "answer" only (the default: with
    whole replies a 135M aggregator has to pick two numbers out of echoed sums, and did not
    learn to) or the "full" text. solo: one solver instead of the team (see the module docstring).
    """
    if not (isinstance(max_value, int) and max_value >= 2):
        raise ScenarioError(f"division_of_labour: max_value must be an int >= 2 (got {max_value!r})")
    if share not in ("answer", "full"):
        raise ScenarioError(f"division_of_labour: share={share!r}; use 'answer' or 'full'")
    flags = (("planner", planner), ("workers_see_parts", workers_see_parts), ("shared_workers", shared_workers), ("solo", solo))
    for option, value in flags:
        if not isinstance(value, bool):
            raise ScenarioError(f"division_of_labour: {option} must be true or false, got {value!r}")
    if solo:
        # Team options have no team to shape: refuse them rather than ignore them.
        team_only = [f"{option}={value}" for option, value, default in
                     (("planner", planner, False), ("workers_see_parts", workers_see_parts, True),
                      ("shared_workers", shared_workers, False)) if value != default]
        if team_only:
            raise ScenarioError(f"division_of_labour: solo=True has no team; it does not combine with {', '.join(team_only)}")
        return make_solo_scenario(max_value, own_weight, format_bonus)
    if not planner and not workers_see_parts:
        raise ScenarioError("division_of_labour: without a planner the workers must see their parts (workers_see_parts=True)")
    worker_adapter = "worker" if shared_workers else None
    briefers = ["planner"] if planner else []
    adders = [*WORKERS, "aggregator"]  # they reply with a number
    agents = briefers + adders
    roles = [
        *([Role("planner", PLANNER, max_new_tokens=32)] if planner else []),
        *(Role(w, WORKER.format(name=w), adapter=worker_adapter) for w in WORKERS),
        Role("aggregator", AGGREGATOR),
    ]

    def sample(rng: random.Random) -> Task:
        return make_sum_task(rng, max_value=max_value, workers_see_parts=workers_see_parts, planner=planner)

    def own(task: Task, episode: Episode) -> dict[str, float]:
        return own_jobs(task, episode, agents, correctness(task, episode))

    def format_only(task: Task, episode: Episode) -> dict[str, float]:
        # For the format only: workers and the aggregator reply with only a number, the
        # planner's brief carries one.
        return {**answered(episode, briefers), **bare_number_replies(episode, adders)}

    reward = blended_reward("division_of_labour", correctness, own, format_only, own_weight, format_bonus)

    def instruction(round_index: int, total: int) -> str:
        return AGGREGATE if round_index == total - 1 else ""

    schedule: Sequence[Sequence[str]] = ([["planner"]] if planner else []) + [WORKERS, ["aggregator"]]
    return Scenario(
        name="division_of_labour",
        description=(
            "Two workers each add a private pair of (a+b)+(c+d); an aggregator adds their results "
            "(optionally a planner briefs the workers first); reward = team correctness and each one's own job."
        ),
        roles=roles,
        graph=graph_maker(planner, share),
        schedule=schedule,
        make_task=sample,
        reward=reward,
        team_answer=aggregator_answer,
        turn_instruction=instruction,
        parse=parse_number_answer,
        max_new_tokens=24,
        train_defaults=TRAIN_DEFAULTS,
    )
