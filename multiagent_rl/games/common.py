"""What every engine wrapper shares: seeded tasks, the engine's result as the episode's
reward, and the winner read from it."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ..hooks import Outcome
from ..records import Episode, Task


def seed_task(rng: random.Random) -> Task:
    """A task that is a seed for the engine; held-out games are seeds never seen in training."""
    seed = rng.randrange(2**31)
    return Task(key=f"seed-{seed}", prompt="", meta={"seed": seed})


def finished(outcome: Outcome, result: Mapping[str, float]) -> Outcome:
    """Mark `outcome` as the game's end: the result goes into its event, the winner (the one
    agent with the best result, else "draw") into the outcome."""
    result = {a: float(v) for a, v in result.items()}
    best = max(result.values())
    leaders = [a for a, v in result.items() if v == best]
    outcome.event = {**(outcome.event or {}), "result": result}
    outcome.winner = leaders[0] if len(leaders) == 1 else "draw"
    outcome.done = True
    return outcome


def result_reward(agents: Sequence[str]):
    """The reward function of an engine scenario: the result the engine gave at the end (0 for
    everyone in a game cut off at max_turns)."""

    def reward(task: Task, episode: Episode) -> dict[str, float]:
        final = next((e["result"] for e in reversed(episode.events) if "result" in e), None)
        return {a: float(final.get(a, 0.0)) for a in agents} if final is not None else dict.fromkeys(agents, 0.0)

    return reward
