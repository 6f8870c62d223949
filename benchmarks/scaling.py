"""Data-parallel scaling on this CPU: the same global batch (debate, 2 solvers, 2 rounds,
4 tasks x 4 samples, random rewards so every update runs) trained for a few steps by

(a) 1 process x 1 thread, (b) 2 processes x 1 thread (`accelerate launch`, gloo),
(c) 1 process x 2 threads,

one after another (never side by side). Figures: mean step seconds after the warm-up step,
and the ratios b/a (ideal 0.5, target <= 0.6) and b/c. Sampling differs between the arms
(each rank draws its own stream), so completion lengths differ a little; seconds per
generated token are printed too.

    python -m benchmarks.scaling [--model tiny] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

from benchmarks.common import EMBEDDED, REPO_DIR, emit

MARK = "SCALING-RESULT "


def worker(model: str, steps: int, out: str, server: str | None = None) -> None:
    """Train `steps` steps (generating through the vLLM server at `server`, if given); the
    main process prints the per-step seconds and tokens."""
    import random

    from multiagent_rl import load_scenario
    from multiagent_rl.config import TrainConfig
    from trainers.loop import Run

    scenario = load_scenario("debate", solvers=2, rounds=2)
    rng = random.Random(0)
    scenario.reward = lambda task, episode: {a: rng.random() for a in scenario.agents}
    config = TrainConfig(
        scenario="debate", scenario_options={"solvers": 2, "rounds": 2}, model=model, tasks_per_step=4, group_size=4,
        max_new_tokens=16, micro_batch_size=16, log_with=[], progress=False, seed=0,
        **({"rollout": {"server": server}} if server else {}),
    )
    run = Run(config, out, scenario=scenario)
    rows = []
    for step in range(1, steps + 1):
        m = run.train_step(step).metrics()
        rows.append({"seconds": m["perf/step_seconds"], "rollout": m["perf/rollout_seconds"],
                     "update": m["perf/update_seconds"], "sync": m.get("perf/grad_sync_seconds", 0.0), "tokens": m["completions/mean_tokens"] * m["update/samples"],
                     "skipped": m["update/skipped"]})
    if run.ranks.is_main:
        print(MARK + json.dumps({"processes": run.ranks.count, "steps": rows}), flush=True)


def arm(model: str, steps: int, processes: int, threads: int, server: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="mrl-scaling-") as out:
        args = ["-m", "benchmarks.scaling", "--worker", "--model", model, "--steps", str(steps), "--out", out]
        args += ["--server", server] if server else []
        if processes == 1:
            cmd = [sys.executable, *args]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "bf16",
                   "--num_cpu_threads_per_process", str(threads), "--main_process_port", str(port), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise RuntimeError(f"{processes} process(es) x {threads} thread(s) exited {proc.returncode}: {tail}")


def summary(result: dict) -> dict:
    measured = result["steps"][1:] or result["steps"]
    n = len(measured)
    return {
        "seconds": sum(r["seconds"] for r in measured) / n,
        "rollout": sum(r["rollout"] for r in measured) / n,
        "update": sum(r["update"] for r in measured) / n,
        "sync": sum(r["sync"] for r in measured) / n,
        "per_token": sum(r["seconds"] for r in measured) / max(sum(r["tokens"] for r in measured), 1),
    }


def main(model: str = EMBEDDED, steps: int = 3) -> dict:
    print(f"scaling bench: model={model} debate 2 solvers x 2 rounds, 4 tasks x 4 samples, {steps} steps", flush=True)
    arms = {}
    for name, processes, threads in (("1x1", 1, 1), ("2x1", 2, 1), ("1x2", 1, 2)):
        arms[name] = summary(arm(model, steps, processes, threads))
        a = arms[name]
        print(f"  {name} (processes x threads): step {a['seconds']:.2f} s (rollout {a['rollout']:.2f}, "
              f"update {a['update']:.2f}, of which gradient sync {a['sync']:.2f}), {a['per_token'] * 1000:.1f} ms per generated token", flush=True)
    return emit({
        "scaling: step seconds, 1 process x 1 thread": round(arms["1x1"]["seconds"], 3),
        "scaling: step seconds, 2 processes x 1 thread": round(arms["2x1"]["seconds"], 3),
        "scaling: step seconds, 1 process x 2 threads": round(arms["1x2"]["seconds"], 3),
        "scaling: 2 processes / 1 process, step time (x, ideal 0.5, target <= 0.6)": round(
            arms["2x1"]["seconds"] / arms["1x1"]["seconds"], 3),
        "scaling: 2 processes x 1 thread / 1 process x 2 threads, step time (x)": round(
            arms["2x1"]["seconds"] / arms["1x2"]["seconds"], 3),
        "scaling: 2 processes / 1 process, seconds per generated token (x)": round(
            arms["2x1"]["per_token"] / arms["1x1"]["per_token"], 3),
    })


def cli(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description="Step time of 2 data-parallel processes against 1")
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--steps", type=int, default=3, help="steps per arm; the first is a warm-up")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        worker(a.model, a.steps, a.out, a.server)
        return None
    return main(a.model, a.steps)


if __name__ == "__main__":
    cli()
