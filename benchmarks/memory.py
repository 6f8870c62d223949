"""Peak memory of N separate adapters against one: the same 4-solver debate step (rollout +
update) with `adapters=per_role` (4 LoRA adapters, each with its own optimizer state) and
`adapters=shared` (1 adapter), each in a fresh subprocess; the figure is the ratio of their
peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), target <= 1.15x.

The workload is identical in both processes (same tasks, prompts, completions budget, and
micro-batches of one agent's samples, so activations peak alike); rewards are random so every group carries signal and the update really runs (a step whose
advantages are all zero skips the update and would hide the optimizer state).

    python -m benchmarks.memory [--model tiny] [--agents 4] [--tasks 2] [--group 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import EMBEDDED, REPO_DIR, emit

MARK = "MEMORY-RESULT "


def worker(model: str, mode: str, agents: int, tasks: int, group: int, max_new_tokens: int) -> dict:
    """One rollout + update step in this process; peak RSS in MB."""
    import random
    import resource
    import tempfile

    from multiagent_rl import load_scenario
    from multiagent_rl.config import TrainConfig
    from trainers.loop import Run

    scenario = load_scenario("debate", solvers=agents, rounds=1)
    rng = random.Random(0)
    scenario.reward = lambda task, episode: {a: rng.random() for a in scenario.agents}
    config = TrainConfig(
        scenario="debate",
        scenario_options={"solvers": agents, "rounds": 1},
        model=model,
        adapters=mode,
        tasks_per_step=tasks,
        group_size=group,
        max_new_tokens=max_new_tokens,
        # Micro-batches of one agent's samples in both modes, so the update's activation
        # peak is the same and the difference is the adapters (weights, grads, AdamW state).
        micro_batch_size=tasks * group,
        log_with=[],
        progress=False,
        seed=0,
    )
    with tempfile.TemporaryDirectory(prefix="mrl-memory-bench-") as tmp:
        run = Run(config, tmp, scenario=scenario)
        metrics = run.train_step(1)
        adapters = len(run.model.peft_config)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "mode": mode,
        "adapters": adapters,
        "peak_rss_mb": peak_kb / 1024,
        "completions": int(metrics["update/samples"]),
        "update_skipped": bool(metrics["update/skipped"]),
    }


def measure(model: str, mode: str, agents: int, tasks: int, group: int, max_new_tokens: int) -> dict:
    cmd = [
        sys.executable, "-m", "benchmarks.memory", "--worker", mode, "--model", model, "--agents", str(agents),
        "--tasks", str(tasks), "--group", str(group), "--max-new-tokens", str(max_new_tokens),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f"memory worker ({mode}) exited {proc.returncode}: {tail}")


def main(model: str = EMBEDDED, agents: int = 4, tasks: int = 2, group: int = 4, max_new_tokens: int = 16) -> dict:
    print(f"memory bench: model={model} debate solvers={agents} rounds=1 tasks={tasks} group={group}", flush=True)
    results = {}
    for mode in ("shared", "per_role"):  # one at a time: they must not share the CPU or RAM pressure
        results[mode] = measure(model, mode, agents, tasks, group, max_new_tokens)
        r = results[mode]
        print(
            f"  {r['adapters']} adapter(s): peak RSS {r['peak_rss_mb']:.0f} MB "
            f"({r['completions']} completions, update skipped: {r['update_skipped']})",
            flush=True,
        )
    one, many = results["shared"], results["per_role"]
    figures = {
        "memory: peak RSS, 1 adapter (MB)": round(one["peak_rss_mb"], 1),
        f"memory: peak RSS, {many['adapters']} adapters (MB)": round(many["peak_rss_mb"], 1),
        f"memory: peak RSS {many['adapters']} adapters / 1 (x, target <= 1.15)": round(
            many["peak_rss_mb"] / one["peak_rss_mb"], 4
        ),
    }
    return emit(figures)


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="Peak RSS with N adapters vs 1")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--worker", choices=["shared", "per_role"], help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        result = worker(a.model, a.worker, a.agents, a.tasks, a.group, a.max_new_tokens)
        print(MARK + json.dumps(result), flush=True)
        return None
    return main(a.model, a.agents, a.tasks, a.group, a.max_new_tokens)


if __name__ == "__main__":
    cli()
