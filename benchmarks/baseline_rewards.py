"""Untrained held-out team reward of every scenario with the embedded model (greedy).

    python -m benchmarks.baseline_rewards [--episodes 50] [--scenario debate] [--option share=answer]

Prints one line per scenario: mean team reward, standard error, team accuracy and answer rate.
"""

from __future__ import annotations

import argparse
import json
import time

import yaml

from multiagent_rl import list_scenarios, load_scenario
from multiagent_rl.backends.hf import HFBackend
from multiagent_rl.models import load_model
from multiagent_rl.rollout import Sampling, rollout
from trainers.loop import team_reward_stats


def measure(name: str, backend, episodes: int, seed: int = 0, options: dict | None = None) -> dict:
    scenario = load_scenario(name, **(options or {}))
    tasks = scenario.heldout_tasks(episodes, seed=seed)
    start = time.perf_counter()
    batch = rollout(scenario, backend, tasks, adapters=dict.fromkeys(scenario.agents), sampling=Sampling(greedy=True), split="eval")
    stats = team_reward_stats(batch.episodes)
    answered = [t.message.answer is not None for ep in batch.episodes for t in ep.turns]
    return {
        "scenario": name,
        "team_reward_mean": round(stats["mean"], 4),
        "team_reward_se": round(stats["se"], 4),
        "team_accuracy": round(stats["accuracy"], 4),
        "answer_rate": sum(answered) / max(len(answered), 1),
        "episodes": len(batch.episodes),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--scenario", action="append", default=None)
    parser.add_argument("--option", action="append", default=[], help="scenario option key=value (YAML value)")
    args = parser.parse_args()
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--option needs key=value, got {item!r}")
        options[key] = yaml.safe_load(value)
    model, tokenizer = load_model("smollm2-135m-instruct")
    backend = HFBackend(model, tokenizer)
    for name in args.scenario or list_scenarios():
        print(json.dumps({**measure(name, backend, args.episodes, options=options), "options": options}), flush=True)


if __name__ == "__main__":
    main()
