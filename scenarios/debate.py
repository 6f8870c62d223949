"""debate (cooperative): solvers answer an arithmetic word problem, read each
other's answers over a complete graph, and answer again; the team answer is the
majority of the last round (ties go to the first solver). Reward = the team's
correctness blended with each solver's own last answer being right (`own_weight`:
with two solvers the tie rule makes the team answer solver_a's, so without it
solver_b's outcome would not depend on what solver_b said), plus a small
individual bonus for replying with only a number, as the system prompt asks.

Worked example of: a complete graph, a multi-round schedule, a procedural task
sampler, and a reward of weighted, named terms (team correctness, own answer, format).
"""

from __future__ import annotations

import random

from multiagent_rl import (
    Episode,
    RewardTerm,
    Role,
    Scenario,
    ScenarioError,
    Task,
    answers_match,
    bare_number_replies,
    complete,
    from_edges,
    latest_answers,
    parse_number_answer,
    tasks_from,
    weighted,
)

NAMES = ["Ali", "Mia", "Sam", "Lea", "Tom", "Ana", "Ben", "Zoe"]
THINGS = ["apples", "coins", "books", "stamps", "marbles", "shells"]

# Short prompts on purpose: on a CPU, prompt tokens are most of the compute.
SYSTEM = "You are {name}, one of {n} math solvers in a team. Reply with only the final number."


def make_word_problem(rng: random.Random, max_value: int = 20, ops: str = "+") -> Task:
    """A one-step word problem: 'Mia has 12 coins and gets 7 more...'."""
    name, thing, op = rng.choice(NAMES), rng.choice(THINGS), rng.choice(ops)
    a, b = rng.randint(1, max_value), rng.randint(1, max_value)
    if op == "-":
        a, b = max(a, b), min(a, b)
        prompt = f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have now?"
        answer = a - b
    else:
        prompt = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        answer = a + b
    return Task(key=f"{name}|{thing}|{a}{op}{b}", prompt=prompt, answer=str(answer), meta={"a": a, "b": b, "op": op})


def make_scenario(
    solvers: int = 2,
    rounds: int = 2,
    max_value: int = 10,
    ops: str = "+",
    share: str = "full",
    own_weight: float = 0.5,
    format_bonus: float = 0.1,
    tasks: str | None = None,
    tasks_split: str | None = None,
) -> Scenario:
    """Build the debate scenario; options are also settable from the CLI (`--set scenario_options.solvers=3`).

    share: what a solver sees of a teammate's message, "full" text or "answer" only.
    tasks: a JSONL, CSV or Parquet file of problems (columns `prompt`, `answer`, optional
    `id`) instead of the generated ones; tasks_split: its split column, if it has one
    (e.g. `--set scenario_options.tasks=examples/word_problems.jsonl
    --set scenario_options.tasks_split=split`).
    """
    names = [f"solver_{chr(ord('a') + i)}" for i in range(solvers)]
    if solvers < 1 or rounds < 1:
        raise ScenarioError(f"debate needs solvers >= 1 and rounds >= 1, got solvers={solvers}, rounds={rounds}")
    # Checked here, not when the first task is drawn: a bad option is one line at the start.
    if not (isinstance(max_value, int) and max_value >= 1):
        raise ScenarioError(f"debate: max_value must be an int >= 1, got {max_value!r}")
    if not (isinstance(ops, str) and ops and set(ops) <= set("+-")):
        raise ScenarioError(f"debate: ops must be made of '+' and '-' (e.g. '+-'), got {ops!r}")
    # solvers=1, rounds=1 is the single-agent baseline on the same tasks.
    system = SYSTEM if solvers > 1 else "You are a math solver. Reply with only the final number."
    roles = [Role(n, system.format(name=n, n=solvers)) for n in names]

    def sample(rng: random.Random) -> Task:
        return make_word_problem(rng, max_value=max_value, ops=ops)

    table = tasks_from(tasks, split=tasks_split) if tasks else None

    def correct(task: Task, episode: Episode) -> float:
        return float(answers_match(episode.team_answer, task.answer))

    def own(task: Task, episode: Episode) -> dict[str, float]:
        return {n: float(answers_match(said, task.answer)) for n, said in latest_answers(episode, names).items()}

    def bare_number(task: Task, episode: Episode) -> dict[str, float]:
        # Pays for the format, not the content; a long reply cut at the token budget that
        # happens to end in a number earns nothing.
        return bare_number_replies(episode, names)

    if not (0 <= own_weight <= 1 and 0 <= format_bonus <= 1):
        raise ScenarioError(f"debate: own_weight and format_bonus must be in [0, 1], got {own_weight}, {format_bonus}")
    # (1 - format_bonus) x [(1 - own_weight) x team correctness + own_weight x own answer] + format_bonus x format
    reward = weighted(
        RewardTerm("correct", correct, (1 - format_bonus) * (1 - own_weight)),
        RewardTerm("own", own, (1 - format_bonus) * own_weight),
        RewardTerm("format", bare_number, format_bonus),
    )

    def instruction(round_index: int, total: int) -> str:
        if round_index == 0:
            return ""
        return "Check your teammates' answers. Your final number?"

    return Scenario(
        name="debate",
        description="Solvers debate arithmetic word problems on a complete graph; majority answer; team reward = correctness.",
        roles=roles,
        graph=complete(names, visibility=share) if solvers > 1 else from_edges([], agents=names),  # a lone solver hears no one
        schedule=[names] * rounds,
        make_task=table or sample,
        reward=reward,
        parse=parse_number_answer,
        turn_instruction=instruction,
        # Generated problems: held-out sums are never seen in training. Data: its own split, or the key hash.
        split_key=None if table else (lambda task: f"{task.meta['a']}{task.meta['op']}{task.meta['b']}"),
        max_new_tokens=16,
        # The settings its published learning rows measured (docs/results.md) (examples/debate_learning.yaml).
        train_defaults={
            "adapters": "per_role", "steps": 200, "time_budget_minutes": 15, "tasks_per_step": 4, "group_size": 6,
            "lr": 5e-4, "temperature": 0.7, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 50,
            "save_every": 5,
        },
    )

