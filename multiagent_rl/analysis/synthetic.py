"""A synthetic debate run folder, for trying `analyse`, for tests and for the speed benchmark.

It imitates what training a debate team tends to produce: early on, long rambling messages
and mostly wrong answers; later, short, agent-specific phrasings, correct first answers,
and agents that adopt the majority they hear. Nothing here is a real model's output.

>>> write_synthetic_debate_run("/tmp/fake-run", steps=30, episodes_per_step=16)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..records import Episode, EpisodeLog, Message, Task, Turn

FILLER = (
    "well let me think about this carefully first we have some items then more arrive so we "
    "should add them together i believe maybe the total could be around this number hmm"
).split()
STYLES = ["sum is {n}", "total {n}", "so {n}", "answer {n}", "= {n}", "we get {n}", "{n} then", "count {n}"]
NAMES = ["Ali", "Mia", "Sam", "Lea", "Tom"]
THINGS = ["apples", "coins", "books", "stamps"]


def _task(rng: random.Random) -> Task:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    prompt = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
    return Task(key=f"{name}|{thing}|{a}+{b}", prompt=prompt, answer=str(a + b), meta={"a": a, "b": b, "op": "+"})


def _say(rng: random.Random, agent_index: int, number: int, skill: float, hint: str = "") -> str:
    if rng.random() > skill:  # untrained: ramble, then the number
        ramble = " ".join(rng.choice(FILLER) for _ in range(rng.randint(8, 30)))
        return f"{hint}{ramble} {number}".strip()
    return hint + STYLES[agent_index % len(STYLES)].format(n=number)


def synthetic_debate_episode(
    rng: random.Random, step: int, skill: float, solvers: int = 3, rounds: int = 2, split: str = "train"
) -> Episode:
    """One episode whose quality grows with `skill` in [0, 1]."""
    agents = [f"solver_{chr(ord('a') + i)}" for i in range(solvers)]
    task = _task(rng)
    truth = int(task.answer)
    turns: list[Turn] = []
    latest: dict[str, int] = {}
    for r in range(rounds):
        current = {}
        for i, agent in enumerate(agents):
            if r == 0:
                number = truth if rng.random() < 0.25 + 0.7 * skill else truth + rng.choice([-3, -2, -1, 1, 2, 10])
                hint = ""
            else:
                heard = [latest[a] for a in agents if a != agent]
                majority = max(set(heard), key=heard.count)
                number = majority if rng.random() < 0.3 + 0.6 * skill and heard.count(majority) > 1 else latest[agent]
                hint = "i agree " if number == majority and number != latest[agent] else ""
            text = _say(rng, i, number, skill, hint)
            receivers = [a for a in agents if a != agent]
            message = Message(sender=agent, receivers=receivers, round=r, text=text, answer=str(number),
                              visibility=dict.fromkeys(receivers, "full"))
            turns.append(Turn(agent=agent, round=r, adapter=agent, message=message,
                              prompt_tokens=60 + 30 * r, completion_tokens=max(1, round(len(text.split()) * 1.3))))
            current[agent] = number
        latest = current
    votes = [latest[a] for a in agents]
    team = max(votes, key=lambda v: (votes.count(v), -votes.index(v)))
    correct = float(team == truth)
    rewards = {a: 0.9 * correct + 0.1 for a in agents}
    return Episode(
        episode_id=f"{split}-{step}-{rng.getrandbits(40):010x}", scenario="debate", task=task, turns=turns,
        rewards=rewards, teams=dict.fromkeys(agents, "team"), team_answer=str(team), split=split, step=step,
    )


def write_synthetic_debate_run(
    path: str | Path,
    steps: int = 30,
    episodes_per_step: int = 16,
    solvers: int = 3,
    rounds: int = 2,
    eval_every: int = 5,
    eval_episodes: int = 8,
    seed: int = 0,
    metrics: bool = True,
    learning_speed: float = 1.0,
) -> Path:
    """Write ``path/episodes/step-NNNNNN.msgpack`` (and ``metrics.jsonl``) for a fake run of
    `steps` steps; returns the run folder. `learning_speed` scales how fast skill grows."""
    run = Path(path)
    rng = random.Random(seed)
    lines = []
    for step in range(1, steps + 1):
        skill = min(1.0, learning_speed * (step - 1) / max(1, steps - 1))
        train = [synthetic_debate_episode(rng, step, skill, solvers, rounds) for _ in range(episodes_per_step)]
        episodes = list(train)
        record = {"step": step, "reward/team_mean": sum(e.team_reward() for e in train) / len(train)}
        if eval_every and step % eval_every == 0:
            held_out = [synthetic_debate_episode(rng, step, skill, solvers, rounds, "eval") for _ in range(eval_episodes)]
            episodes += held_out
            record["eval/team_reward_mean"] = sum(e.team_reward() for e in held_out) / len(held_out)
        EpisodeLog(run / "episodes" / f"step-{step:06d}.msgpack", fsync=False).extend(episodes)
        lines.append(json.dumps(record))
    if metrics:
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run
