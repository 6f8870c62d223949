"""Checkpoints without pickle: adapters in peft format, optimizer tensors in
safetensors, everything else in JSON; written to a temporary folder, every file and the
folder fsynced, then renamed, so `checkpoints/step-N/` either exists whole or not at all,
even across a power cut.

checkpoints/step-N/
  adapters/<name>/adapter_config.json, adapter_model.safetensors
  optimizer.safetensors     optimizer state tensors ("state.<param index>.<key>")
  trainer_state.json        step, optimizer param groups, scheduler state, Python RNG
  rng.safetensors           torch RNG state
  manifest.json             written last: every file's size and sha256, library versions

`resumable_checkpoint` checks the manifest of the newest checkpoint before anything is
loaded and falls back to the previous good one, naming what was damaged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from multiagent_rl.adapters import load_adapter_weights, save_adapters

from .durable import fsync_dir, fsync_file

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every `checkpoints/step-N` folder, oldest first (temporary folders are not among them)."""
    root = Path(run_dir) / "checkpoints"
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))) if root.is_dir() else []


MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-step-"


def remove_temporary(run_dir: Path) -> list[str]:
    """Delete what a crash inside a write left: checkpoint folders never committed, and the
    run folder's `*.tmp` files (a config or metrics rewrite, or a strategy table, cut short)."""
    root = Path(run_dir) / "checkpoints"
    stale = sorted(p for p in root.glob(f"{TMP_PREFIX}*") if p.is_dir()) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p)
    files = sorted([*Path(run_dir).glob("*.tmp"), *Path(run_dir).glob("strategy/*.tmp")])
    for f in files:
        f.unlink()
    return [p.name for p in stale + files]


def verify_checkpoint(path: Path) -> str | None:
    """None if `path` is whole, else what is wrong with it (one phrase)."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        # A committed folder always has one (it is written before the rename); without it,
        # only a checkpoint of an older version, marked whole by its trainer_state.json.
        return None if (path / "trainer_state.json").is_file() else "no manifest.json"
    try:
        listed = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"manifest.json is unreadable ({type(exc).__name__})"
    for name, want in listed.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != want["size"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {want['size']}"
        if _sha256(file) != want["sha256"]:
            return f"{name} does not match its checksum"
    return None


def resumable_checkpoint(run_dir: Path) -> tuple[tuple[int, Path] | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and every newer one that did not, with why."""
    damaged = []
    for step, path in reversed(step_dirs(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return (step, path), damaged
        damaged.append((path, problem))
    return None, damaged


def prune_checkpoints(run_dir: Path, keep: int | None) -> list[str]:
    """Delete all but the newest `keep` checkpoints (None keeps every one)."""
    if keep is None:
        return []
    found = step_dirs(run_dir)
    removed = []
    for _, path in found[:-keep] if len(found) > keep else []:
        shutil.rmtree(path)
        removed.append(path.name)
    return removed


def save_checkpoint(
    run_dir: Path, step: int, model, optimizer, scheduler, extra: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None, adapters: list[str] | None = None, write_more=None,
) -> Path:
    """Write `checkpoints/step-N/` whole or not at all; `extra` goes into trainer_state.json,
    `config` (the run's resolved settings) into the manifest. `adapters`: the ones saved under
    adapters/ (default: all); `write_more(folder)` adds files (a trainer's own state) before
    the manifest lists them."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f"{TMP_PREFIX}{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _write_checkpoint(tmp, step, model, optimizer, scheduler, extra, config, adapters, write_more)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # disk full, interrupted: leave nothing half-written
        raise
    return final


def optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as (tensors for safetensors, JSON-able rest)."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"optimizer_param_groups": opt_state["param_groups"], "optimizer_scalars": scalars}


def load_optimizer_state(optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Restore what `optimizer_state` gave."""
    opt_state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        opt_state.setdefault(int(index), {})[key] = value
    for index, values in state.get("optimizer_scalars", {}).items():
        opt_state.setdefault(int(index), {}).update(values)
    groups = state["optimizer_param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})


def _write_checkpoint(tmp: Path, step: int, model, optimizer, scheduler, extra: dict[str, Any] | None,
                      config: dict[str, Any] | None, adapters: list[str] | None, write_more) -> None:
    save_adapters(model, tmp / "adapters", adapters)
    tensors, opt_json = optimizer_state(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    if write_more is not None:
        write_more(tmp)
    state = {
        "step": step,
        **opt_json,
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "python_rng": _jsonable(random.getstate()),
        **(extra or {}),
    }
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {
        "step": step,
        "files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
        "versions": {name: _version(name) for name in ("multiagent-rl", "torch", "transformers", "peft", "accelerate")},
        "config": config,
    }
    for p in files:
        fsync_file(p)
    # The manifest last: a folder without one was cut off before it was whole.
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    fsync_file(tmp / MANIFEST)
    for folder in sorted({p.parent for p in files} | {tmp}, key=lambda d: len(d.parts), reverse=True):
        fsync_dir(folder)


def load_checkpoint(path: Path, model, optimizer, scheduler, read_more=None) -> dict[str, Any]:
    """Restore adapters, optimizer, scheduler and RNG from a checkpoint (and, with
    `read_more(folder)`, a trainer's own state); returns trainer_state."""
    path = Path(path)
    state = json.loads((path / "trainer_state.json").read_text())
    load_adapter_weights(model, path / "adapters")
    load_optimizer_state(optimizer, load_file(path / "optimizer.safetensors"), state)
    if read_more is not None:
        read_more(path)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    random.setstate(_python_rng(state["python_rng"]))
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch_rng"])
    return state


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if torch.is_tensor(value):
        return value.tolist()
    return value


def _python_rng(value: list) -> tuple:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
