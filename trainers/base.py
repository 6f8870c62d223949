"""The trainer contract: what the loop hands a trainer, what it gets back, and the
registries of trainers and advantage estimators.

The loop does rollout -> `trainer.update(batch)` -> sync -> log -> checkpoint and knows
no trainer's internals. A trainer receives the rollout's typed turn records
(`RolloutBatch.samples`: ids, rollout log-probs, temperature, adapter, trainable flag,
the global state at that turn) with the finished episodes, and updates the live
adapters. A third-party trainer registers itself:

>>> @register_trainer("my_trainer")             # doctest: +SKIP
... class MyTrainer(Trainer):
...     def update(self, batch): ...
"""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multiagent_rl.config import ConfigError, TrainConfig
from multiagent_rl.rollout import RolloutBatch
from multiagent_rl.scenario import Scenario

from .distributed import Ranks
from .policy import UpdateSettings


@dataclass
class TrainerContext:
    """What the run gives its trainer: settings, the model with its policy adapters, and
    where it runs."""

    config: TrainConfig
    model: Any  # a PeftModel holding every policy adapter
    tokenizer: Any
    scenario: Scenario
    accelerator: Any
    ranks: Ranks
    agent_adapters: dict[str, str | None]  # agent -> the adapter that plays it
    policy_adapters: list[str]  # the adapters the trainer updates (never a frozen one)


class Trainer(abc.ABC):
    """Base of every trainer: owns the policy optimizer and scheduler; subclasses turn a
    rollout batch into advantages and an update (`update`), and may keep state of their
    own in checkpoints (`save` / `load`, safetensors and JSON only)."""

    name = "trainer"
    needs_states = False  # True: the rollout keeps the global state at each turn step (`RolloutBatch.states`)

    def __init__(self, ctx: TrainerContext):
        self.ctx = ctx
        cfg = ctx.config
        # In the model's order, as before there were trainers: old checkpoints' optimizer state fits.
        wanted = {f".{name}." for name in ctx.policy_adapters}
        params = [p for n, p in ctx.model.named_parameters() if "lora_" in n and any(w in n for w in wanted)]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
        # prepare() places the optimizer state on the device; the scheduler steps once per
        # optimizer step, whatever the number of processes (step_scheduler_with_optimizer=False).
        self.optimizer, self.scheduler = ctx.accelerator.prepare(optimizer, scheduler)

    @abc.abstractmethod
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Advantages from `batch` and one update of the policy adapters; returns metrics
        (the same on every rank). The loop hands over only whole, healthy task groups (an
        episode whose user code failed takes its group out: `without_failed_groups`)."""

    def save(self, folder: Path) -> None:
        """Write this trainer's own state into a checkpoint folder being built."""
        return None  # by default a trainer keeps nothing beyond the optimizer the loop saves

    def load(self, folder: Path) -> str | None:
        """Restore what `save` wrote; a checkpoint written by another trainer (a run switched
        with --allow-changes) may lack it: return one line saying what starts afresh."""
        return None

    def update_settings(self) -> UpdateSettings:
        cfg = self.ctx.config
        return UpdateSettings(
            epochs=cfg.epochs, minibatches=cfg.minibatches, micro_batch_size=cfg.micro_batch_size,
            clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, beta=cfg.beta, symbol_entropy=cfg.symbol_entropy,
            loss_aggregation=cfg.loss_aggregation, max_grad_norm=cfg.max_grad_norm,
            mixed_precision=self.ctx.accelerator.mixed_precision, importance_cap=cfg.importance_sampling_cap,
        )


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor after k optimizer steps: the warmup, then constant or falling
    linearly to 0 at the run's last step (epochs x minibatches optimizer steps per step)."""
    warmup, total = cfg.warmup_steps, max(1, cfg.steps * cfg.epochs * cfg.minibatches)

    def factor(k: int) -> float:
        rising = min(1.0, (k + 1) / warmup) if warmup else 1.0
        return rising * (max(0.0, 1.0 - k / total) if cfg.lr_schedule == "linear" else 1.0)

    return factor


TRAINERS: dict[str, type[Trainer]] = {}
BUILT_IN = {"grpo": "trainers.grpo", "critic": "trainers.critic", "all_actions": "trainers.all_actions"}
ENTRY_POINTS = "multiagent_rl.trainers"


def register_trainer(name: str) -> Callable[[type[Trainer]], type[Trainer]]:
    def add(cls: type[Trainer]) -> type[Trainer]:
        if not (isinstance(cls, type) and issubclass(cls, Trainer)):
            raise TypeError(f"trainer {name!r} must be a subclass of trainers.base.Trainer")
        cls.name = name
        TRAINERS[name] = cls
        return cls

    return add


def trainer_class(name: str) -> type[Trainer]:
    """The registered trainer `name`: built-in, already registered, or from the entry-point
    group `multiagent_rl.trainers`."""
    if name not in TRAINERS and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    if name not in TRAINERS:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            if entry.name == name:
                entry.load()  # registers itself
    if name not in TRAINERS:
        known = sorted(set(BUILT_IN) | set(TRAINERS))
        raise ConfigError(f"unknown trainer {name!r}; known: {', '.join(known)}")
    return TRAINERS[name]


# ----- advantage estimators ------------------------------------------------------------


@dataclass
class Returns:
    """What every advantage estimator reads: the ledger's rewards at each decision point of
    each episode (an episode's points are consecutive and in order), per value stream (an
    agent, a team, or one for all), and a critic's values there when a critic runs."""

    rewards: torch.Tensor  # (P, S): what was earned at each point, per stream
    episodes: torch.Tensor  # (P,) long: the episode of each point
    groups: torch.Tensor  # (P,) long: the task group of each point's episode
    values: torch.Tensor | None = None  # (P, S): V at each point (None: no critic)
    branches: list[tuple[int, ...]] | None = None  # per point: its episode's path in its task's tree
    learner: torch.Tensor | None = None  # (P, S) bool: the learner played this stream at this point


@dataclass
class Estimate:
    """An estimator's answer: advantages and value targets at each point, and counts for
    the metrics (summed over ranks by the trainer)."""

    advantages: torch.Tensor  # (P, S)
    returns: torch.Tensor  # (P, S): the targets a value model learns
    counts: dict[str, float]
    # A per-turn estimator's answer: (group, tree node) -> (S,) advantage of the turns made
    # there (`TurnSample.branch`); None: every turn takes its point's advantage.
    nodes: dict[tuple[int, tuple[int, ...]], torch.Tensor] | None = None


Estimator = Callable[[Returns, Any], Estimate]  # (returns, the trainer's config section) -> Estimate
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str, needs_values: bool = False):
    """Register an advantage estimator, `fn(returns: Returns, settings) -> Estimate`, a pure
    function of tensors; `settings` is the trainer's config section (`grpo:`, `critic:`).
    `needs_values`: it reads `Returns.values`, so only a trainer with a value model can use it.
    A class registers a stateful estimator: the trainer makes one per run, `cls(ranks)`, and
    keeps its `state_dict()` in checkpoints (`trainers/role_baseline.py`).

    >>> @register_estimator("my_estimator")      # doctest: +SKIP
    ... def mine(returns, settings): ...
    """

    def add(fn: Estimator) -> Estimator:
        fn.needs_values = needs_values
        ESTIMATORS[name] = fn
        return fn

    return add


ESTIMATOR_MODULES = {"group": "trainers.grpo", "gae": "trainers.gae", "role_baseline": "trainers.role_baseline",
                     "tree": "trainers.tree"}


def advantage_estimator(name: str) -> Estimator:
    """The registered estimator `name` (config: `grpo.advantage`, `critic.advantage`)."""
    if name not in ESTIMATORS and name in ESTIMATOR_MODULES:
        importlib.import_module(ESTIMATOR_MODULES[name])
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown advantage estimator {name!r}; known: {', '.join(sorted(set(ESTIMATORS) | set(ESTIMATOR_MODULES)))}")
    return ESTIMATORS[name]
