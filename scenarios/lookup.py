"""lookup (cooperative, split information): a keeper privately holds a small table
("red 3, blue 7, green 5, pink 2") and an asker privately holds the question ("Which number
does blue have?"); neither can answer alone. The asker speaks first, to the keeper; then
the keeper answers with the number, which is the team answer. With `solo=True` one agent,
the solver, gets the table and the question in one prompt and answers: the single-agent
twin on the same tasks (the same held-out tasks for the same seed) and the same reward
formula (`scenarios.twins`).

Reward: the team's correctness, blended with each agent's own job (the asker's: naming the
asked colour and no other; the keeper's and the solver's: the team's correctness), plus a
format term (the asker: a message that names one colour of the table; the keeper and the
solver: a bare number).
"""

from __future__ import annotations

import random
import re

from multiagent_rl import (
    Episode,
    Role,
    Scenario,
    ScenarioError,
    Task,
    answers_match,
    bare_number_replies,
    from_edges,
    latest_answers,
    majority_answer,
    parse_number_answer,
)
from scenarios.twins import TRAIN_DEFAULTS, blended_reward

COLOURS = ["red", "blue", "green", "pink", "black", "white", "brown", "grey"]
WORD = re.compile(r"[a-z]+")
# One worked example in every prompt: the 135M model otherwise answers "The answer is: 1".
ASKER = "You are the asker. Tell the keeper the colour in your question, in one word. Example: Which number does red have? -> red"
KEEPER = ("You are the keeper. The asker names a colour: reply with only its number in your table. "
          "Example: table red 3, blue 7; asked blue -> 7")
SOLVER = "You are the solver. Reply with only the number of the colour asked for. Example: table red 3, blue 7; asked blue -> 7"


def parse_lookup(text: str) -> str | None:
    """A keeper's or solver's number; an asker's colour (the first one it names)."""
    number = parse_number_answer(text)
    if number is not None:
        return number
    return next((w for w in WORD.findall(text.lower()) if w in COLOURS), None)


def make_lookup_task(rng: random.Random, entries: int, solo: bool) -> Task:
    """`entries` colours with distinct numbers 1-9, one of them asked; the options change the
    views only: the same rng draws the same key and answer for the team and the solver."""
    colours = rng.sample(COLOURS, entries)
    numbers = rng.sample(range(1, 10), entries)
    asked = rng.choice(colours)
    table = ", ".join(f"{c} {n}" for c, n in zip(colours, numbers, strict=True))
    question = f"Which number does {asked} have?"
    if solo:
        private = {"solver": f"The table: {table}. {question}"}
    else:
        private = {"keeper": f"Your table: {table}.", "asker": f"Your question: {question}"}
    return Task(
        key=f"{table}|{asked}",
        prompt="",
        answer=str(dict(zip(colours, numbers, strict=True))[asked]),
        private=private,
        meta={"table": dict(zip(colours, numbers, strict=True)), "asked": asked},
    )


def names_only(message: str, colour: str, table: dict[str, int]) -> bool:
    """True when `message` names `colour` and no other colour of the table."""
    named = {w for w in WORD.findall(message.lower()) if w in table}
    return named == {colour}


def make_scenario(entries: int = 4, own_weight: float = 0.5, format_bonus: float = 0.1, solo: bool = False) -> Scenario:
    """Build lookup (options settable as `--set scenario_options.entries=6`).

    solo: one solver with the table and the question instead of the team (see the module docstring)."""
    if not (isinstance(entries, int) and not isinstance(entries, bool) and 2 <= entries <= len(COLOURS)):
        raise ScenarioError(f"lookup: entries must be an int from 2 to {len(COLOURS)}, got {entries!r}")
    if not isinstance(solo, bool):
        raise ScenarioError(f"lookup: solo must be true or false, got {solo!r}")
    answerer = "solver" if solo else "keeper"

    def sample(rng: random.Random) -> Task:
        return make_lookup_task(rng, entries, solo)

    def team_answer(episode: Episode) -> str | None:
        return majority_answer(episode, [answerer])

    def correct(task: Task, episode: Episode) -> float:
        return float(answers_match(episode.team_answer, task.answer))

    def asker_said(episode: Episode) -> str:
        return next((t.message.text for t in episode.turns if t.agent == "asker"), "")

    def own(task: Task, episode: Episode) -> dict[str, float]:
        jobs = {answerer: correct(task, episode)}
        if not solo:
            jobs["asker"] = float(names_only(asker_said(episode), task.meta["asked"], task.meta["table"]))
        return jobs

    def format_only(task: Task, episode: Episode) -> dict[str, float]:
        form = bare_number_replies(episode, [answerer])
        if not solo:
            named = latest_answers(episode, ["asker"])["asker"]
            form["asker"] = float(named in task.meta["table"])
        return form

    if solo:
        roles = [Role("solver", SOLVER, max_new_tokens=8)]
        graph, schedule = from_edges([], agents=["solver"]), [["solver"]]
    else:
        roles = [Role("asker", ASKER, max_new_tokens=8), Role("keeper", KEEPER, max_new_tokens=8)]
        graph, schedule = from_edges([("asker", "keeper")], agents=["asker", "keeper"]), [["asker"], ["keeper"]]
    return Scenario(
        name="lookup",
        description=(
            "Split information: a keeper holds a colour -> number table, an asker the colour asked for; the asker "
            "tells the keeper, who answers (solo: one solver sees both); reward = the answer's correctness."
        ),
        roles=roles,
        graph=graph,
        schedule=schedule,
        make_task=sample,
        reward=blended_reward("lookup", correct, own, format_only, own_weight, format_bonus),
        team_answer=team_answer,
        parse=parse_lookup,
        max_new_tokens=8,
        train_defaults=TRAIN_DEFAULTS,
    )
