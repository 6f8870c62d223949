"""The critic against GRPO on the same batch: step cost per completion and peak memory.

Each trainer runs in its own fresh process on the same workload: debate (2 solvers, 2
rounds), 4 tasks x 6 samples, random per-agent rewards so every GRPO group carries
signal and both trainers really update. Step 1 warms up; steps 2.. are timed. Reported:

- whole step (rollout + update) per completion, critic / GRPO (target <= 1.3x);
- the update alone per completion (GRPO: the policy update; critic: values, GAE, the
  policy update and the value update), critic / GRPO;
- peak RSS (VmHWM) of each process, critic / GRPO.

    python -m benchmarks.critic_cost [--model tiny] [--steps 4] [--tasks 4] [--group 6]
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.common import (
    EMBEDDED,
    emit,
    peak_rss_mb,
    random_rewards,
    timed_steps,
    worker_result,
)

MARK = "CRITIC-COST-RESULT "


def worker(trainer: str, model: str, steps: int, tasks: int, group: int, max_new_tokens: int) -> dict:
    from multiagent_rl import load_scenario
    from multiagent_rl.config import TrainConfig

    scenario = random_rewards(load_scenario("debate"))
    config = TrainConfig(
        scenario="debate", model=model, trainer=trainer, tasks_per_step=tasks, group_size=group,
        max_new_tokens=max_new_tokens, log_with=[], progress=False, seed=0,
    )
    timed = timed_steps(config, scenario, steps)
    step_s = [m["perf/step_seconds"] for m in timed]
    update_s = [m["perf/update_seconds"] for m in timed]
    completions = [m["update/samples"] for m in timed]
    n = statistics.fmean(completions)
    return {
        "trainer": trainer,
        "step_per_completion_s": statistics.fmean(step_s) / n,
        "update_per_completion_s": statistics.fmean(update_s) / n,
        "completions": n,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure(trainer: str, *sizes: str) -> dict:
    return worker_result("benchmarks.critic_cost", MARK, trainer, *sizes)


def main(model: str = EMBEDDED, steps: int = 4, tasks: int = 4, group: int = 6, max_new_tokens: int = 16) -> dict:
    print(f"critic bench: model={model} debate tasks={tasks} group={group} steps={steps} (1 warm-up)", flush=True)
    sizes = ["--model", model, "--steps", str(steps), "--tasks", str(tasks), "--group", str(group),
             "--max-new-tokens", str(max_new_tokens)]
    results = {}
    for trainer in ("grpo", "critic"):  # one at a time: they must not share the CPU
        results[trainer] = r = measure(trainer, *sizes)
        print(f"  {trainer}: step {r['step_per_completion_s']:.3f} s/completion, update "
              f"{r['update_per_completion_s']:.3f} s/completion, peak {r['peak_rss_mb']:.0f} MB", flush=True)
    g, c = results["grpo"], results["critic"]
    return emit({
        "critic: step per completion, critic / GRPO (x, target <= 1.3)": round(c["step_per_completion_s"] / g["step_per_completion_s"], 4),
        "critic: update per completion, critic / GRPO (x)": round(c["update_per_completion_s"] / g["update_per_completion_s"], 4),
        "critic: step per completion, critic (s)": round(c["step_per_completion_s"], 4),
        "critic: step per completion, GRPO (s)": round(g["step_per_completion_s"], 4),
        "critic: peak RSS, critic / GRPO (x)": round(c["peak_rss_mb"] / g["peak_rss_mb"], 4),
        "critic: peak RSS, critic (MB)": round(c["peak_rss_mb"], 1),
        "critic: peak RSS, GRPO (MB)": round(g["peak_rss_mb"], 1),
    })


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="The critic's step cost and peak memory against GRPO's")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--worker", choices=["grpo", "critic"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.model, args.steps, args.tasks, args.group, args.max_new_tokens)
        print(MARK + json.dumps(result), flush=True)
        return None
    return main(args.model, args.steps, args.tasks, args.group, args.max_new_tokens)


if __name__ == "__main__":
    cli()
