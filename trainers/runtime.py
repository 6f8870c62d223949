"""What a run runs on: accelerate's Accelerator (device, processes, precision), the weight
dtype, and whether a batch fits in this machine's memory before anything is allocated."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from multiagent_rl.config import ConfigError, TrainConfig
from multiagent_rl.scenario import Scenario


def make_accelerator(config: TrainConfig, run_dir: Path):
    """The run's Accelerator: CPU unless a GPU is there, precision from `mixed_precision`.
    accelerate keeps one state per process; a later run in the same process (a notebook,
    the tests) that asks for another precision starts that state afresh."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, config.mixed_precision):
        AcceleratorState._reset_state()
    trackers = [t for t in config.log_with if t]
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(run_dir),
        step_scheduler_with_optimizer=False,
    )


def check_batch_fits(config: TrainConfig, scenario: Scenario, vocab: int, processes: int = 1) -> None:
    """Refuse, before anything is allocated, a batch whose generate call could not fit in memory:
    every row keeps a float32 score vector over the vocabulary for each new token."""
    acting = max(len(r) for r in scenario.schedule) if scenario.schedule else len(scenario.model_agents)
    rows = -(-config.tasks_per_step // processes) * config.group_size * acting
    if config.max_batch_size:
        rows = min(rows, config.max_batch_size)
    tokens = config.max_new_tokens or scenario.max_new_tokens
    need = rows * vocab * 4 * (tokens + 2)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.8 * have:
        raise ConfigError(
            f"tasks_per_step={config.tasks_per_step} x group_size={config.group_size} makes {rows} rows per generate "
            f"call, about {need / 2**30:.0f} GiB of scores; this machine has {have / 2**30:.0f} GiB: "
            "lower group_size or tasks_per_step, or set max_batch_size"
        )


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """`auto`: bfloat16 weights on a GPU, float32 on a CPU (where bf16 weights are slower)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.type == "cuda" else "float32"


