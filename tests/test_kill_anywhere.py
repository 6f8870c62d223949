"""SIGKILL a training run at seeded random moments (before the first checkpoint, between
steps, inside a checkpoint write), resume it, and check what a crash may never do: lose or
repeat a step's records, or end with other weights, optimizer state or RNG than a run that
was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from multiagent_rl import read_episodes

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "duo_run.py"
STEPS, SAVE_EVERY, EPISODES_PER_STEP = 6, 2, 4 * 3  # tasks_per_step x group_size in the script
TRIALS = 12


def command(out: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "--out", str(out), "--steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--hf"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def finish(out: Path) -> None:
    done = subprocess.run(command(out), env=env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def kill_at(out: Path, delay: float | None) -> str:
    """Start a run and SIGKILL it after `delay` seconds, or (None) as soon as a checkpoint
    write has begun. Returns when it was killed, for the failure message."""
    proc = subprocess.Popen(command(out), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        folder = out / "checkpoints"
        writing = folder.is_dir() and any(folder.glob(".tmp-step-*"))
        if (delay is None and writing) or (delay is not None and elapsed >= delay) or elapsed > 120:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if writing:
                return "inside a checkpoint write"
            return "before the first checkpoint" if not (folder.is_dir() and any(folder.glob("step-*"))) else "between checkpoints"
        time.sleep(0.0005)
    return "finished before the kill"


def tensors(run: Path, name: str) -> dict:
    return load_file(run / "checkpoints" / f"step-{STEPS}" / name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "reference"
    start = time.monotonic()
    finish(out)
    return out, time.monotonic() - start


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(reference, tmp_path):
    ref, seconds = reference
    rng = random.Random(1234)
    # Kills spread over the run's length (start-up is most of it, so several land before the
    # first checkpoint), and two aimed at the inside of a checkpoint write.
    delays = [rng.uniform(0.3, 1.0) * seconds for _ in range(TRIALS - 2)] + [None, None]
    ref_weights = {a: load_file(ref / "checkpoints" / f"step-{STEPS}" / "adapters" / a / "adapter_model.safetensors")
                   for a in ("solver", "critic")}
    seen = []
    for trial, delay in enumerate(delays):
        out = tmp_path / f"trial-{trial}"
        when = kill_at(out, delay)
        seen.append(when)
        finish(out)
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(STEPS + 1)), f"trial {trial} ({when}): metrics steps {steps}"
        ids = []
        for step in range(1, STEPS + 1):
            log = read_episodes(out / "episodes" / f"step-{step:06d}.msgpack")
            assert not log.skipped and len(log.episodes) == EPISODES_PER_STEP, f"trial {trial} ({when}), step {step}"
            ids += [e.episode_id for e in log.episodes]
        assert len(ids) == len(set(ids)), f"trial {trial} ({when}): an episode is logged twice"
        for adapter, weights in ref_weights.items():
            got = load_file(out / "checkpoints" / f"step-{STEPS}" / "adapters" / adapter / "adapter_model.safetensors")
            assert all(got[k].equal(v) for k, v in weights.items()), f"trial {trial} ({when}): {adapter} differs"
        for name in ("optimizer.safetensors", "rng.safetensors"):
            got, want = tensors(out, name), tensors(ref, name)
            assert all(got[k].equal(v) for k, v in want.items()), f"trial {trial} ({when}): {name} differs"
    print("kill trials:", ", ".join(f"{w}: {seen.count(w)}" for w in sorted(set(seen))))
    assert "before the first checkpoint" in seen and "between checkpoints" in seen, seen
