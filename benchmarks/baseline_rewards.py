"""Untrained held-out team reward of every scenario with the embedded model (greedy).

    python -m benchmarks.baseline_rewards [--episodes 50] [--scenario debate]

Prints one line per scenario: mean team reward, standard error, and answer rate.
"""

from __future__ import annotations

import argparse
import json
import time

from multiagent_rl import list_scenarios, load_scenario
from multiagent_rl.backends.hf import HFBackend
from multiagent_rl.models import load_model
from multiagent_rl.rollout import Sampling, rollout
from trainers.loop import team_reward_stats


def measure(name: str, backend, episodes: int, seed: int = 0) -> dict:
    scenario = load_scenario(name)
    tasks = scenario.heldout_tasks(episodes, seed=seed)
    start = time.perf_counter()
    batch = rollout(scenario, backend, tasks, adapters=dict.fromkeys(scenario.agents), sampling=Sampling(greedy=True), split="eval")
    stats = team_reward_stats(batch.episodes)
    answered = [t.message.answer is not None for ep in batch.episodes for t in ep.turns]
    correct = sum(1 for ep in batch.episodes if ep.team_answer is not None and ep.team_answer == ep.task.answer)
    return {
        "scenario": name,
        "team_reward_mean": round(stats["mean"], 4),
        "team_reward_se": round(stats["se"], 4),
        "team_answer_exact": correct / len(batch.episodes),
        "answer_rate": sum(answered) / max(len(answered), 1),
        "episodes": len(batch.episodes),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--scenario", action="append", default=None)
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m-instruct")
    backend = HFBackend(model, tokenizer)
    for name in args.scenario or list_scenarios():
        print(json.dumps(measure(name, backend, args.episodes)), flush=True)


if __name__ == "__main__":
    main()
