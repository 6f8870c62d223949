"""Backend calls for a batch of episodes of different lengths: one call per turn step for
every acting model agent of every running episode, so a batch whose episodes last 2 to 11
turns should take as many calls as its longest episode (target: the ratio is 1.0).

The scenario is a countdown whose task fixes its length; two model agents alternate, one
turn per step. (A scripted role's turns are played inside the env's step and take no call.)

    python -m benchmarks.episode_lengths [--model tiny] [--group 2]
"""

from __future__ import annotations

import argparse
import random

from benchmarks.common import TINY, emit


def countdown(lengths: range):
    from multiagent_rl import Outcome, Role, Scenario, Task, complete

    agents = ["mover", "echo"]

    def make_task(rng: random.Random) -> Task:
        n = rng.choice(list(lengths))
        return Task(key=f"len{n}-{rng.randint(0, 10**9)}", prompt="", meta={"turns": n})

    def act(view, agent, text):
        return Outcome(done=len(view.turns) >= view.task.meta["turns"])

    return Scenario(
        name="countdown", roles=[Role("mover", "Say one word."), Role("echo", "Echo.")],
        graph=complete(agents), schedule=None, make_task=make_task,
        reward=lambda task, episode: dict.fromkeys(agents, 0.0),
        turn_order=lambda view: [agents[len(view.turns) % 2]], observe=lambda view, agent: f"turn {len(view.turns)}",
        act=act, max_turns=max(lengths) + 1, max_new_tokens=2,
    )


def main(model: str = TINY, group: int = 2) -> dict:
    from multiagent_rl.backends.hf import HFBackend
    from multiagent_rl.models import load_model
    from multiagent_rl.records import Task
    from multiagent_rl.rollout import rollout

    lengths = range(2, 12)
    scenario = countdown(lengths)
    tasks = [Task(key=f"len{n}", prompt="", meta={"turns": n}) for n in lengths]
    model_, tokenizer = load_model(model)
    batch = rollout(scenario, HFBackend(model_, tokenizer), tasks, group_size=group, adapters={"mover": None, "echo": None}, seed=0)
    turns = [len(ep.turns) for ep in batch.episodes]
    print(f"episode lengths bench: {len(batch.episodes)} episodes of {min(turns)}-{max(turns)} turns, "
          f"{batch.backend_calls} backend calls", flush=True)
    return emit({
        "rollout: backend calls / longest episode's turn steps, episodes of 2-11 turns (x, target 1.0)": round(
            batch.backend_calls / max(turns), 4),
        "rollout: backend calls for episodes of 2-11 turns": batch.backend_calls,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=TINY)
    parser.add_argument("--group", type=int, default=2)
    args = parser.parse_args()
    main(args.model, args.group)
