"""What every engine wrapper shares: one role per player, the table graph, seeded tasks,
the engine's result as the episode's reward, and the winner read from it."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from ..graph import MessageGraph, complete
from ..hooks import Outcome
from ..records import Episode, Task
from ..scenario import Role


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


def game_roles(
    agents: Sequence[str], default_prompt: str, system_prompts: Mapping[str, str] | None, scripted: Mapping | None
) -> list[Role]:
    """One role per engine player, each its own team; `default_prompt` may name `{agent}`;
    a player `scripted` names is played by that policy."""
    prompts, policies = dict(system_prompts or {}), dict(scripted or {})
    return [Role(a, prompts.get(a, default_prompt.format(agent=a)), team=a, policy=policies.get(a)) for a in agents]


def table_graph(agents: Sequence[str]) -> MessageGraph:
    """Moves reach the players through the engine's observations; the replies themselves go
    to every player too (a complete graph), as at a game table."""
    return complete(list(agents))
