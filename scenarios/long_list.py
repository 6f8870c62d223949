"""long_list (cooperative): add one to each number of a list too long for one reply.

Every turn may generate at most `turn_tokens` tokens (10 by default). A result takes two
tokens (" 7"), so the answer to twelve numbers takes 24, more than any one reply can carry.
The team: `workers` workers each privately hold one stretch of the list and reply with that
stretch plus one; the team answer is their replies joined in order. With `solo=True` one
agent, the solver, sees the whole list and gets as many turns as the team has workers, each
with the same budget, and carries the list on from turn to turn (it sees its earlier
replies): the same total budget over its turns, the same tasks (the same held-out tasks for
the same seed) and the same reward formula (`scenarios.twins`).

Reward: the share of the list's positions the team answer gets right (a number past the
list's end counts against it), blended with each agent's own job (a worker's stretch; the
solver's is the whole list), plus a format term for replying with numbers only.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from multiagent_rl import Episode, Role, Scenario, ScenarioError, Task, from_edges, reply_share
from scenarios.twins import TRAIN_DEFAULTS, blended_reward

NUMBERS = re.compile(r"\d+")
ONLY_NUMBERS = re.compile(r"\s*\d+(?:[\s,]+\d+)*[\s.]*")
# One worked example in every prompt: the 135M model otherwise echoes its numbers back.
WORKER = "You are {name}. Add 1 to each of your numbers and reply with only the results. Example: 3 5 1 -> 4 6 2"
SOLVER = (
    "You are the solver. Add 1 to each number of the list and reply with only the results, in order. "
    "Example: 3 5 1 -> 4 6 2. Your replies are short: carry on where you stopped when asked."
)
CARRY_ON = "Carry on with the next results."


def parse_numbers(text: str) -> str | None:
    """The numbers of a reply, space-separated, in order (None: no number)."""
    found = NUMBERS.findall(text)
    return " ".join(found) if found else None


def stretches(length: int, workers: int) -> list[tuple[int, int]]:
    """The [start, end) stretch of the list each worker holds: as even as the length allows."""
    cuts = [round(i * length / workers) for i in range(workers + 1)]
    return list(zip(cuts, cuts[1:], strict=False))


def make_list_task(rng: random.Random, length: int, workers: int, solo: bool) -> Task:
    """A list of digits 1-8 (so each result is one digit); the options change the views only:
    the same rng draws the same key and answer for the team and the solver."""
    numbers = [rng.randint(1, 8) for _ in range(length)]
    results = [n + 1 for n in numbers]
    spans = stretches(length, workers)
    if solo:
        private = {"solver": "Add 1 to each: " + " ".join(map(str, numbers))}
    else:
        private = {f"worker_{i + 1}": "Add 1 to each: " + " ".join(map(str, numbers[a:b])) for i, (a, b) in enumerate(spans)}
    return Task(
        key=" ".join(map(str, numbers)),
        prompt="",
        answer=" ".join(map(str, results)),
        private=private,
        meta={"numbers": numbers, "stretches": [" ".join(map(str, results[a:b])) for a, b in spans]},
    )


def position_score(said: str | None, answer: str) -> float:
    """The share of the answer's positions `said` gets right, over the longer of the two."""
    got, want = (said or "").split(), answer.split()
    return sum(g == w for g, w in zip(got, want, strict=False)) / max(len(got), len(want))


def joined_replies(episode: Episode, agents: Sequence[str]) -> str | None:
    """Every number `agents` sent, in the order of their turns (None: no number at all)."""
    numbers = [turn.message.answer for turn in episode.turns if turn.agent in agents and turn.message.answer]
    return " ".join(numbers) if numbers else None


def make_scenario(
    length: int = 12,
    workers: int = 3,
    turn_tokens: int = 10,
    own_weight: float = 0.5,
    format_bonus: float = 0.1,
    solo: bool = False,
) -> Scenario:
    """Build long_list (options settable as `--set scenario_options.length=16`).

    solo: one solver with `workers` turns instead of the team (see the module docstring)."""
    for option, value, least in (("length", length, 2), ("workers", workers, 1), ("turn_tokens", turn_tokens, 2)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise ScenarioError(f"long_list: {option} must be an int >= {least}, got {value!r}")
    if workers > length:
        raise ScenarioError(f"long_list: {workers} workers for {length} numbers leaves a worker without any")
    if not isinstance(solo, bool):
        raise ScenarioError(f"long_list: solo must be true or false, got {solo!r}")
    names = ["solver"] if solo else [f"worker_{i + 1}" for i in range(workers)]
    if solo:
        roles = [Role("solver", SOLVER, max_new_tokens=turn_tokens)]
        schedule: list[list[str]] = [["solver"]] * workers  # the team's turns, one agent
    else:
        roles = [Role(n, WORKER.format(name=n), max_new_tokens=turn_tokens) for n in names]
        schedule = [names]

    def sample(rng: random.Random) -> Task:
        return make_list_task(rng, length, workers, solo)

    def team_answer(episode: Episode) -> str | None:
        return joined_replies(episode, names)

    def correct(task: Task, episode: Episode) -> float:
        return position_score(episode.team_answer, task.answer)

    def own(task: Task, episode: Episode) -> dict[str, float]:
        if solo:
            return {"solver": correct(task, episode)}
        return {n: position_score(joined_replies(episode, [n]), part)
                for n, part in zip(names, task.meta["stretches"], strict=True)}

    def format_only(task: Task, episode: Episode) -> dict[str, float]:
        return reply_share(episode, names, ONLY_NUMBERS.fullmatch)

    def instruction(round_index: int, total: int) -> str:
        return CARRY_ON if round_index > 0 else ""

    return Scenario(
        name="long_list",
        description=(
            "Add 1 to each of 12 numbers when one reply can carry 5: workers each take a stretch, "
            "or (solo) one solver carries the list over as many turns; reward = the share of positions right."
        ),
        roles=roles,
        graph=from_edges([], agents=names),  # nobody needs to hear anyone: the work splits cleanly
        schedule=schedule,
        make_task=sample,
        reward=blended_reward("long_list", correct, own, format_only, own_weight, format_bonus),
        team_answer=team_answer,
        turn_instruction=instruction,
        parse=parse_numbers,
        max_new_tokens=turn_tokens,
        train_defaults=TRAIN_DEFAULTS,
    )

