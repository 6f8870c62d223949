"""Helpers shared by the benchmarks: printing figures, LoRA init, model folders, environment facts."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
EMBEDDED = "smollm2-135m-instruct"
TINY = "tiny"


def emit(figures: dict) -> dict:
    """Print every figure as `name: value` (notes under `_notes` as `name: null (reason)`)."""
    notes = figures.get("_notes", {})
    for name, value in figures.items():
        if name.startswith("_"):
            continue
        if value is None:
            print(f"{name}: null ({notes.get(name, 'not measured')})", flush=True)
        elif isinstance(value, float):
            print(f"{name}: {value:.4g}", flush=True)
        else:
            print(f"{name}: {value}", flush=True)
    return figures


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB.

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries that high-water mark across
    fork + exec, so a worker started by a big parent reports the parent's peak (this is how
    an earlier results.json showed 6.8 GB for a step that peaks at 2.4 GB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (not Linux?)")


def randomize_lora_b(model, std: float = 1e-3, seed: int = 0) -> int:
    """Give every adapter's lora_B non-zero weights (fresh LoRA has B = 0, so adapters
    would all equal the base model). Returns how many tensors were touched."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    touched = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
                touched += 1
    return touched


def save_tiny_model(folder: str | Path) -> Path:
    """Write the `tiny` model (random 2-layer llama, seed 0) and its tokenizer to a plain HF
    folder, so a separate process (e.g. TRL) can load exactly the same weights."""
    from multiagent_rl.models import load_tokenizer, tiny_model

    folder = Path(folder)
    tokenizer = load_tokenizer(TINY)
    model = tiny_model(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def model_folder(name: str, scratch: str | Path) -> str:
    """An HF folder for `name`: the converted embedded model, a tiny one written under
    `scratch`, or `name` itself (a folder or HF id)."""
    from multiagent_rl.models import resolve_model_path

    if name == TINY:
        return str(save_tiny_model(Path(scratch) / "tiny-model"))
    return resolve_model_path(name)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Facts that explain a figure: threads, versions, CPU."""
    import peft
    import torch
    import transformers

    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def worker_result(module: str, mark: str, *args: str) -> dict:
    """Run `python -m module --worker ARGS` in a fresh process (so its peak memory and
    threads are its own) and return the JSON it printed after `mark`."""
    proc = subprocess.run([sys.executable, "-m", module, "--worker", *args], capture_output=True, text=True, cwd=REPO_DIR)
    for line in proc.stdout.splitlines():
        if line.startswith(mark):
            return json.loads(line[len(mark):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f"{module} worker {args[0]} exited {proc.returncode}: {tail}")


def random_rewards(scenario, seed: int = 0):
    """`scenario` paying every agent a random reward: every group carries signal, so every
    trainer really updates (what a cost benchmark needs, whatever the model says)."""
    import random

    rng = random.Random(seed)
    scenario.reward = lambda task, episode: {a: rng.random() for a in scenario.agents}
    return scenario


def random_debate(**options):
    """The debate team paid random rewards, as a scenario file's factory
    (`benchmarks/common.py:random_debate`): a process that loads the run's scenario by name,
    such as a rollout worker, builds the same one."""
    from multiagent_rl import load_scenario

    return random_rewards(load_scenario("debate", **options))


def timed_steps(config, scenario, steps: int) -> list[dict]:
    """Train `steps` steps of a fresh run in a scratch folder; the metrics of steps 2.. (step 1
    warms up)."""
    from trainers.loop import Run

    with tempfile.TemporaryDirectory(prefix="mrl-bench-") as tmp:
        run = Run(config, tmp, scenario=scenario)
        metrics = [run.train_step(step).metrics() for step in range(1, steps + 1)]
    return metrics[1:]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion (None for no trials)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 3), round(centre + half, 3)
