"""Rollout overlapped with the update (`rollout.max_staleness: 1`) against the synchronous
loop, on the debate team (4 tasks x 6 samples a step).

Three runs, one at a time, each in a fresh process on the same steps and seeds:
- ahead: k = 1, the rollout worker process and the trainer one torch thread each;
- sync, 2 threads: the synchronous loop in one process with two torch threads;
- sync, 1 thread: the same with one thread.
Random per-agent rewards, so every step updates in all three. Step 1 has nothing to overlap
with (the worker's first rollout starts with it); steps 2.. are timed. Reported: step time
ahead / sync with 2 threads (target <= 0.8x) and ahead / sync with 1 thread (target <= 0.6x),
and each run's rollout and update seconds.

    python -m benchmarks.overlap [--model tiny] [--steps 5] [--tasks 4] [--group 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import BENCH_DIR, EMBEDDED, emit, worker_result

MARK = "OVERLAP-RESULT "
MODES = {"ahead": (1, 1), "sync2": (0, 2), "sync1": (0, 1)}  # mode -> (max_staleness, torch threads)


def worker(mode: str, model: str, steps: int, tasks: int, group: int) -> dict:
    import torch

    from multiagent_rl.config import TrainConfig
    from trainers.loop import Run

    staleness, threads = MODES[mode]
    torch.set_num_threads(threads)
    config = TrainConfig(
        scenario=f"{BENCH_DIR / 'common.py'}:random_debate", model=model, tasks_per_step=tasks, group_size=group, steps=steps, eval_episodes=1,
        eval_every=0, log_with=[], progress=False, seed=0, rollout={"max_staleness": staleness},
    )
    with tempfile.TemporaryDirectory(prefix="mrl-bench-") as tmp:
        Run(config, tmp).train()  # the scenario by name: the rollout worker loads the same one
        lines = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    timed = [m for m in lines if m["step"] >= 2]
    mean = lambda key: statistics.fmean(m[key] for m in timed)  # noqa: E731
    return {
        "mode": mode, "step_s": mean("perf/step_seconds"), "wait_s": mean("perf/rollout_seconds"),
        "play_s": mean("perf/rollout_play_seconds"), "update_s": mean("perf/update_seconds"),
        "tokens_per_step": mean("rollout/generated_tokens"), "skipped": sum(m["update/skipped"] for m in timed),
        "staleness": [m["rollout/staleness"] for m in lines if m["step"] >= 1],
    }


def main(model: str = EMBEDDED, steps: int = 5, tasks: int = 4, group: int = 6) -> dict:
    print(f"overlap bench: model={model} debate, {tasks} tasks x {group} samples, {steps} steps (1 untimed)", flush=True)
    sizes = ["--model", model, "--steps", str(steps), "--tasks", str(tasks), "--group", str(group)]
    results = {}
    for mode in MODES:  # one at a time: each owns the CPU
        results[mode] = r = worker_result("benchmarks.overlap", MARK, mode, *sizes)
        print(f"  {mode}: step {r['step_s']:.2f} s (waiting for the rollout {r['wait_s']:.2f} s, playing "
              f"{r['play_s']:.2f} s, update {r['update_s']:.2f} s), {r['tokens_per_step']:.0f} tokens per step, "
              f"staleness {r['staleness']}, {r['skipped']:.0f} skipped updates", flush=True)
    ahead, sync2, sync1 = results["ahead"], results["sync2"], results["sync1"]
    return emit({
        "overlap: step time, k=1 (1+1 threads) / sync 2 threads (x, target <= 0.8)": round(ahead["step_s"] / sync2["step_s"], 4),
        "overlap: step time, k=1 (1+1 threads) / sync 1 thread (x, target <= 0.6)": round(ahead["step_s"] / sync1["step_s"], 4),
        "overlap: step time, k=1 (s)": round(ahead["step_s"], 3),
        "overlap: step time, sync 2 threads (s)": round(sync2["step_s"], 3),
        "overlap: step time, sync 1 thread (s)": round(sync1["step_s"], 3),
        "overlap: generated tokens per step, k=1 / sync 1 thread (x)": round(ahead["tokens_per_step"] / sync1["tokens_per_step"], 4),
    })


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="Step time with the rollout one step ahead against the synchronous loop")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(MARK + json.dumps(worker(args.worker, args.model, args.steps, args.tasks, args.group)), flush=True)
        return None
    return main(args.model, args.steps, args.tasks, args.group)


if __name__ == "__main__":
    cli()
