"""Branched rollouts with the tree estimator against GRPO on the same budget: step cost per
generated token, and backend calls per step.

Each trainer runs in its own fresh process on the planner team (division_of_labour with a
planner: 3 turn steps): GRPO plays 4 tasks x 6 episodes; the tree plays 4 tasks branched
3 briefs x 2 worker replies x 2 aggregations (about as many generated tokens). Random
per-agent rewards, so every group and sibling set carries signal and both trainers update.
Step 1 warms up; steps 2.. are timed. Reported:

- whole step (rollout + update) per generated token, tree / GRPO (target <= 1.15x);
- backend calls per step of each (the tree: its deepest branch's turn steps, 3).

    python -m benchmarks.tree_cost [--model tiny] [--steps 4] [--tasks 4]
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.common import EMBEDDED, emit, random_rewards, timed_steps, worker_result

MARK = "TREE-COST-RESULT "
PLAN = [{"step": 0, "n": 3}, {"step": 1, "n": 2}, {"step": 2, "n": 2}]


def worker(estimator: str, model: str, steps: int, tasks: int) -> dict:
    from multiagent_rl import load_scenario
    from multiagent_rl.config import TrainConfig

    scenario = random_rewards(load_scenario("division_of_labour", planner=True))
    shape = {"group_size": 6} if estimator == "group" else {"group_size": 1, "rollout": {"branching": PLAN}}
    config = TrainConfig(
        scenario="division_of_labour", scenario_options={"planner": True}, model=model, tasks_per_step=tasks,
        grpo={"advantage": estimator}, temperature=0.7, log_with=[], progress=False, seed=0, **shape,
    )
    timed = timed_steps(config, scenario, steps)
    step_s = [m["perf/step_seconds"] for m in timed]
    tokens = [m["rollout/generated_tokens"] for m in timed]
    calls = [m["perf/backend_calls"] for m in timed]
    return {
        "estimator": estimator,
        "step_per_token_s": sum(step_s) / sum(tokens),
        "tokens_per_step": statistics.fmean(tokens),
        "backend_calls_per_step": statistics.fmean(calls),
    }


def measure(estimator: str, *sizes: str) -> dict:
    return worker_result("benchmarks.tree_cost", MARK, estimator, *sizes)


def main(model: str = EMBEDDED, steps: int = 4, tasks: int = 4) -> dict:
    print(f"tree bench: model={model} planner team, tasks={tasks}, GRPO x6 vs tree 3x2x2, steps={steps} (1 warm-up)",
          flush=True)
    sizes = ["--model", model, "--steps", str(steps), "--tasks", str(tasks)]
    results = {}
    for estimator in ("group", "tree"):  # one at a time: they must not share the CPU
        results[estimator] = r = measure(estimator, *sizes)
        print(f"  {estimator}: {r['step_per_token_s'] * 1000:.2f} ms/token, {r['tokens_per_step']:.0f} tokens and "
              f"{r['backend_calls_per_step']:.1f} backend calls per step", flush=True)
    g, t = results["group"], results["tree"]
    return emit({
        "tree: step per generated token, tree / GRPO (x, target <= 1.15)": round(t["step_per_token_s"] / g["step_per_token_s"], 4),
        "tree: generated tokens per step, tree / GRPO (x)": round(t["tokens_per_step"] / g["tokens_per_step"], 4),
        "tree: backend calls per step, tree": t["backend_calls_per_step"],
        "tree: backend calls per step, GRPO": g["backend_calls_per_step"],
        "tree: step per generated token, tree (ms)": round(t["step_per_token_s"] * 1000, 3),
        "tree: step per generated token, GRPO (ms)": round(g["step_per_token_s"] * 1000, 3),
    })


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="The tree estimator's step cost per generated token against GRPO's")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--worker", choices=["group", "tree"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(MARK + json.dumps(worker(args.worker, args.model, args.steps, args.tasks)), flush=True)
        return None
    return main(args.model, args.steps, args.tasks)


if __name__ == "__main__":
    cli()
