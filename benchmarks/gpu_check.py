"""The short GPU check: does a run really train on the GPU, and how fast, next to the CPU.

On one GPU, in a few minutes, it

1. builds a debate run (embedded SmolLM2-135M, HF backend, bf16 weights and autocast) and
   asserts that every parameter is on the GPU;
2. trains a few steps with a forward pre-hook on every module that fails on any input not
   on its module's device (every batch of rollout and update), timing each step;
3. checks that a checkpoint written on the GPU holds CPU tensors equal to the GPU weights
   (a GPU run resumes on a CPU and back);
4. prints step seconds per completion, rollout tokens/s and peak GPU memory, next to the CPU
   figures `make bench` wrote in benchmarks/results.json, and writes them as JSON;
5. trains the same run synchronously and with the rollout one step ahead
   (`rollout.max_staleness: 1`: a worker process with its own model copy on the same GPU)
   and reports the step time ratio and the staleness each step was played with;
6. where vLLM is installed: starts `multiagent-rl serve` on the GPU and trains the run
   through it, synchronously and one step ahead, reporting step times (skipped, and said
   so, where vLLM is missing).

    python benchmarks/gpu_check.py [--steps 3] [--out gpu_check.json] [--skip-server]

What it needs and how to install it offline: docs/scaling.md ("GPUs").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CPU_FIGURES = {  # this check's figure -> the CPU figure of benchmarks/results.json beside it
    "step seconds per completion": "train 2-agent debate: s/completion (whole step)",  # same batch
    "rollout tokens/s": "rollout: batched tokens/s",  # 4 x 6 samples, 16 tokens
}


def device_guard(model, device):
    """Fail at once on any module input that is not on `device`."""
    import torch

    def check(module, args, kwargs):
        for value in [*args, *kwargs.values()]:
            if torch.is_tensor(value) and value.device != device:
                raise AssertionError(f"{type(module).__name__} got an input on {value.device}, not {device}")

    return [m.register_forward_pre_hook(check, with_kwargs=True) for m in model.modules()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a few debate steps on one GPU and report speed and memory")
    parser.add_argument("--steps", type=int, default=3, help="training steps (the first is a warm-up)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the same checks on the CPU (tests the script)")
    parser.add_argument("--skip-server", action="store_true", help="leave out the shared vLLM server check")
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import load_file

    from multiagent_rl.config import load_config
    from trainers.checkpoint import save_checkpoint
    from trainers.loop import Run

    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print("gpu_check: no CUDA device is visible; nothing to check", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "none (CPU dry run)"
    # The batch of `make bench`'s 2-agent debate figure, so the two lines compare like with like.
    config = load_config(None, [
        # By file, so the check runs from a source tree that was never pip-installed.
        f"scenario={ROOT / 'scenarios' / 'debate.py'}:make_scenario", f"model={args.model}", "backend=hf", "mixed_precision=bf16", "dtype=auto",
        "tasks_per_step=4", "group_size=8", "max_new_tokens=20", "micro_batch_size=16", "temperature=1.0",
        "log_with=[]", "progress=false",
    ])
    with tempfile.TemporaryDirectory(prefix="mrl-gpu-check-") as tmp:
        run = Run(config, tmp)
        # step 1: everything the run owns is on the GPU
        assert run.device.type == ("cuda" if cuda else "cpu"), f"the run chose {run.device}"
        off = [n for n, p in run.model.named_parameters() if p.device != run.device]
        assert not off, f"{len(off)} parameters not on {run.device}, e.g. {off[:3]}"
        print(f"gpu_check: {gpu}; run on {run.device}, weights {run.dtype}, autocast {run.accelerator.mixed_precision}",
              flush=True)
        hooks = device_guard(run.model, run.device)
        synchronize = torch.cuda.synchronize if cuda else (lambda: None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        # step 2: train, every batch checked
        rows = []
        for step in range(1, args.steps + 1):
            synchronize()
            start = time.perf_counter()
            m = run.train_step(step).metrics()
            synchronize()
            rows.append({"seconds": time.perf_counter() - start, "completions": m["update/samples"],
                         "tokens_per_s": m["perf/tokens_per_s"], "skipped": m["update/skipped"]})
            print(f"  step {step}: {rows[-1]['seconds']:.2f} s, {int(m['update/samples'])} completions, "
                  f"rollout {m['perf/tokens_per_s']:.0f} tok/s, update skipped: {bool(m['update/skipped'])}", flush=True)
        for h in hooks:
            h.remove()
        peak_allocated = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        peak_reserved = torch.cuda.max_memory_reserved() / 2**20 if cuda else float("nan")
        # step 3: a checkpoint written here is plain CPU tensors equal to the GPU weights
        path = save_checkpoint(Path(tmp), args.steps, run.model, run.optimizer, run.scheduler)
        for folder in (path / "adapters").iterdir():
            saved = load_file(folder / "adapter_model.safetensors")
            assert all(t.device.type == "cpu" for t in saved.values())
            live = {n: p for n, p in run.model.named_parameters() if f".{folder.name}." in n and "lora_" in n}
            assert len(saved) == len(live), f"{folder.name}: {len(saved)} saved tensors, {len(live)} live"
            for name, tensor in saved.items():
                match = [p for n, p in live.items() if n.replace(f".{folder.name}", "") == name]
                assert match and torch.equal(match[0].detach().cpu(), tensor), f"{folder.name}: {name} differs"
    measured = rows[1:] or rows
    figures = {
        "gpu": gpu,
        "step seconds per completion": sum(r["seconds"] for r in measured) / sum(r["completions"] for r in measured),
        "rollout tokens/s": sum(r["tokens_per_s"] for r in measured) / len(measured),
        "peak GPU memory allocated (MB)": round(peak_allocated, 1),
        "peak GPU memory reserved (MB)": round(peak_reserved, 1),
        "updates skipped": sum(r["skipped"] for r in measured),
    }
    figures.update(rollout_modes(config, args.steps, "in process"))
    figures.update(server_check(config, args) if not args.skip_server else {"server": "skipped (--skip-server)"})
    results = ROOT / "benchmarks" / "results.json"
    cpu = json.loads(results.read_text()) if results.is_file() else {}
    print(f"gpu_check: all parameters and batches were on {run.device}; the checkpoint is device-independent")
    for name, value in figures.items():
        key = CPU_FIGURES.get(name)
        beside = f"   (CPU, make bench, {key!r}: {cpu[key]})" if key in cpu else ""
        print(f"{name}: {value:.4g}{beside}" if isinstance(value, float) else f"{name}: {value}{beside}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def train_steps(config, steps: int, *settings: str) -> list[dict]:
    """A fresh run of `steps` steps with `settings` on top of `config`; its step metrics."""
    from multiagent_rl.config import TrainConfig
    from trainers.loop import Run

    data = config.model_dump(mode="json")
    for setting in settings:
        key, value = setting.split("=", 1)
        section, _, name = key.rpartition(".")
        (data.setdefault(section, {}) if section else data)[name] = json.loads(value)
    data.update(steps=steps, eval_episodes=1, eval_every=0)
    with tempfile.TemporaryDirectory(prefix="mrl-gpu-check-") as tmp:
        Run(TrainConfig.model_validate(data), tmp).train()
        lines = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["step"] > 0]


def rollout_modes(config, steps: int, where: str, *settings: str) -> dict:
    """Step time synchronous against one step ahead (steps 2.. of each), and the staleness of
    each step's rollout (one step ahead: 0, then 1)."""
    steps = max(steps, 3)
    sync = train_steps(config, steps, *settings)
    ahead = train_steps(config, steps, *settings, "rollout.max_staleness=1")
    mean = lambda rows: sum(m["perf/step_seconds"] for m in rows[1:]) / len(rows[1:])  # noqa: E731
    staleness = [m["rollout/staleness"] for m in ahead]
    assert staleness == [0] + [1] * (steps - 1), f"{where}: one step ahead played with staleness {staleness}"
    print(f"gpu_check: {where}, one step ahead: staleness {staleness}, step {mean(ahead):.2f} s against "
          f"{mean(sync):.2f} s synchronous", flush=True)
    return {f"{where}: step seconds, synchronous": mean(sync), f"{where}: step seconds, one step ahead": mean(ahead),
            f"{where}: one step ahead / synchronous": mean(ahead) / mean(sync)}


def server_check(config, args) -> dict:
    """The run through a shared vLLM server on this machine's GPU, synchronous and one step ahead."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("gpu_check: vLLM is not installed: the shared server check is skipped", flush=True)
        return {"server": "skipped (vLLM not installed)"}
    if config.model == "tiny":
        return {"server": "skipped (vLLM cannot load the in-memory tiny model)"}
    from multiagent_rl.serve import LocalServer

    with tempfile.TemporaryDirectory(prefix="mrl-gpu-server-") as tmp, \
            LocalServer(args.model, log=Path(tmp) / "server.log", max_loras=8, max_lora_rank=config.lora.rank,
                        gpu_memory_utilization=0.3) as server:
        return {"server": "ran", **rollout_modes(config, args.steps, "through the server", f'rollout.server="{server.url}"')}


if __name__ == "__main__":
    sys.exit(main())
