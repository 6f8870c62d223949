"""What a run runs on: accelerate's Accelerator (device, processes, precision), the weight
dtype, and whether a batch fits in this machine's memory before anything is allocated."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from multiagent_rl.branching import leaves_per_task
from multiagent_rl.config import ConfigError, TrainConfig
from multiagent_rl.scenario import Scenario


def make_accelerator(config: TrainConfig, run_dir: Path):
    """The run's Accelerator: CPU unless a GPU is there, precision from `mixed_precision`.
    accelerate keeps one state per process; a later run in the same process (a notebook,
    the tests) that asks for another precision starts that state afresh."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    trackers = check_trackers(config.log_with)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, config.mixed_precision):
        AcceleratorState._reset_state()
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(run_dir),
        step_scheduler_with_optimizer=False,
    )


def check_trackers(log_with: list[str]) -> list[str]:
    """The `log_with` trackers, each one accelerate knows and whose package is installed:
    accelerate itself would only warn and train with no tracking.

    >>> check_trackers(["wandb"])   # doctest: +SKIP
    ConfigError: log_with: wandb is not installed; pip install wandb (or drop it from log_with)
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    installed = {str(t) for t in get_available_trackers()}
    trackers = [t for t in log_with if t]
    for name in trackers:
        if name == LoggerType.ALL.value:  # every installed tracker, whichever they are
            continue
        if name not in LOGGER_TYPE_TO_CLASS:  # the built-in ones and any registered with accelerate
            known = ", ".join([LoggerType.ALL.value, *LOGGER_TYPE_TO_CLASS])
            raise ConfigError(f"log_with: unknown tracker {name!r}; accelerate knows: {known}")
        if name in LoggerType and name not in installed:  # the package is named as the tracker
            raise ConfigError(f"log_with: {name} is not installed; pip install {name} (or drop it from log_with)")
    return trackers


def check_batch_fits(config: TrainConfig, scenario: Scenario, vocab: int, processes: int = 1) -> None:
    """Refuse, before anything is allocated, a batch whose generate call could not fit in memory:
    sampling holds a few vocabulary-sized float32 tensors per row at each step (logits,
    log-softmax, top-p's sort and its int64 indices; about 12 measured, 16 with a margin),
    whatever the number of new tokens: each token's log-prob is kept as it is generated."""
    acting = max(len(r) for r in scenario.schedule) if scenario.schedule else len(scenario.model_agents)
    leaves = leaves_per_task(config.rollout.branching, config.group_size)  # a branched rollout's episodes per task
    rows = -(-config.tasks_per_step // processes) * leaves * acting
    if config.max_batch_size:
        rows = min(rows, config.max_batch_size)
    need = rows * vocab * 4 * 16
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.8 * have:
        raise ConfigError(
            f"tasks_per_step={config.tasks_per_step} x {leaves} episodes per task (group_size={config.group_size}"
            f"{' x the branching plan' if config.rollout.branching else ''}) makes {rows} rows per generate "
            f"call, about {need / 2**30:.0f} GiB of scores; this machine has {have / 2**30:.0f} GiB: "
            "lower group_size, tasks_per_step or the forks' n, or set max_batch_size"
        )


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """`auto`: bfloat16 weights on a GPU, float32 on a CPU (where bf16 weights are slower)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.type == "cuda" else "float32"


