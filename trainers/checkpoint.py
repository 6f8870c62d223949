"""Checkpoints without pickle: adapters in peft format, optimizer tensors in
safetensors, everything else in JSON; written to a temporary folder and renamed,
so `checkpoints/step-N/` either exists whole or not at all.

checkpoints/step-N/
  adapters/<name>/adapter_config.json, adapter_model.safetensors
  optimizer.safetensors     optimizer state tensors ("state.<param index>.<key>")
  trainer_state.json        step, optimizer param groups, scheduler state, Python RNG
  rng.safetensors           torch RNG state
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from multiagent_rl.adapters import load_adapter_weights, save_adapters

STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The highest complete `checkpoints/step-N` (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return max(found) if found else None


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, extra: dict[str, Any] | None = None) -> Path:
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp-step-{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_adapters(model, tmp / "adapters")
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    save_file(tensors, tmp / "optimizer.safetensors")
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    state = {
        "step": step,
        "optimizer_param_groups": opt_state["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "python_rng": _jsonable(random.getstate()),
        **(extra or {}),
    }
    # trainer_state.json last: its presence marks the folder complete.
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapters, optimizer, scheduler and RNG from a checkpoint; returns trainer_state."""
    path = Path(path)
    state = json.loads((path / "trainer_state.json").read_text())
    load_adapter_weights(model, path / "adapters")
    tensors = load_file(path / "optimizer.safetensors")
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
