"""A Team: a scenario's agents as they play, the base model with its LoRA adapters and the
backend that generates for them. Training wraps one in a Trainer; `play`, `eval` and the
analysis build one alone, from a run folder's settings and a checkpoint's adapters.

>>> team = Team.build(config, load_scenario("debate"), checkpoint=Path("runs/d1/checkpoints/step-30"))  # doctest: +SKIP
>>> batch = team.play(tasks, sampling=Sampling(greedy=True))                        # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .adapters import (
    SHARED_ADAPTER,
    LoraSettings,
    adapter_map,
    adapter_names,
    add_adapters,
    attach_adapters,
    enable_training,
    load_adapter_weights,
    save_adapters,
)
from .config import ConfigError, TrainConfig
from .models import load_model, resolve_model_path
from .records import Task
from .rollout import RolloutBatch, Sampling, rollout
from .scenario import Scenario

BASE = "base"  # `play(adapters=BASE)`: every agent played by the untrained base model
SEATED_LEAGUES = ("mirror", "pool")  # league modes where one shared adapter learns every seat


def server_client(config: TrainConfig, tokenizer, **options: Any):
    """A client of the run's shared vLLM server with the run's `rollout.server_*` settings,
    keeping loaded the versions a stale rollout may still use (max_staleness + 1)."""
    from .backends.server import ServerBackend

    rollout = config.rollout
    return ServerBackend(rollout.server, resolve_model_path(config.model), tokenizer,
                         timeout=rollout.server_timeout_seconds, retries=rollout.server_retries,
                         keep_versions=rollout.max_staleness + 1, seed=config.seed, **options)


def agent_adapter_map(config: TrainConfig, scenario: Scenario) -> dict[str, str]:
    """Agent -> the adapter that plays it: one shared adapter in a league that seats one
    learner in every seat (`league.mode` mirror or pool), else as `adapters:` says."""
    return adapter_map(scenario, "shared" if config.league.mode in SEATED_LEAGUES else config.adapters)


def frozen_name(snapshot: str) -> str:
    """The adapter a league snapshot ("step-20") is served under."""
    return f"frozen-{snapshot}"


class Team:
    """The base model with one LoRA adapter per role (or one shared), and its backend."""

    def __init__(self, config: TrainConfig, scenario: Scenario, model, tokenizer, backend,
                 agent_adapters: dict[str, str], live_dir: Path | None = None):
        self.config = config
        self.scenario = scenario
        self.model = model  # a PeftModel holding every adapter in `policy_adapters`
        self.tokenizer = tokenizer
        self.backend = backend
        self.agent_adapters = agent_adapters  # agent -> the adapter that plays it
        self.policy_adapters = adapter_names(agent_adapters)
        self.frozen: list[str] = []  # frozen copies (league snapshots): served, never trained
        self.live_dir = live_dir  # where an out-of-process engine reads adapters after each update

    @classmethod
    def build(cls, config: TrainConfig, scenario: Scenario, *, device: Any = "cpu", dtype: str = "float32",
              mixed_precision: str = "no", live_dir: Path | None = None, processes: int = 1,
              checkpoint: Path | None = None, frozen: Sequence[str] = ()) -> Team:
        """Load the base model, attach the adapters (fresh, from the torch seed in force, or
        a checkpoint's: `checkpoint/adapters/<name>/`), place them on `device` and start the
        backend `config.backend` on them. A league that seats one learner in every seat
        (`league.mode` mirror or pool) plays every agent with one shared adapter; `frozen`
        names frozen adapters to create (a resumed league's pool) before the checkpoint loads."""
        if config.rollout.server:  # an unreachable or wrong server says so before any weights load
            from .backends.server import check_server

            check_server(config.rollout.server, resolve_model_path(config.model))
        base, tokenizer = load_model(config.model, dtype=dtype)
        agent_adapters = agent_adapter_map(config, scenario)
        names = adapter_names(agent_adapters)
        model = attach_adapters(base, [*names, *frozen], LoraSettings.from_config(config.lora)).to(device)
        enable_training(model, names)
        if checkpoint is not None:
            load_adapter_weights(model, checkpoint / "adapters")
        team = cls(config, scenario, model, tokenizer, None, agent_adapters, live_dir)
        team.frozen = list(frozen)
        team.backend = team._start_backend(mixed_precision, processes)
        return team

    def _start_backend(self, mixed_precision: str, processes: int):
        cfg = self.config
        if cfg.rollout.server:
            return self._server_backend(processes)
        if cfg.backend == "hf":
            from .backends.hf import HFBackend

            return HFBackend(self.model, self.tokenizer, max_batch_size=cfg.max_batch_size, mixed_precision=mixed_precision)
        from .backends.vllm import VLLMBackend

        if processes > 1:
            raise ConfigError(
                f"backend=vllm runs beside training in one process; with {processes} processes use "
                "backend=hf (see docs/scaling.md)"
            )
        if self.live_dir is None:
            raise ConfigError("backend=vllm needs a folder to hand it the adapters (a run folder)")
        first = self.live_dir / "step-0"
        save_adapters(self.model, first, self.policy_adapters)
        engine = cfg.vllm
        return VLLMBackend(
            resolve_model_path(cfg.model),
            adapter_dirs={p.name: str(p) for p in first.iterdir()},
            max_lora_rank=cfg.lora.rank,
            max_loras=engine.max_loras or max(4, len(self.model.peft_config) + cfg.league.pool_size),
            seed=cfg.seed,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            tensor_parallel_size=engine.tensor_parallel_size,
            dtype=engine.dtype,
            own_adapter_dirs=True,  # step-0 is deleted once step-1 replaces it, like every update's
        )

    def _server_backend(self, processes: int):
        from .backends.server import process_group

        if self.live_dir is None:
            raise ConfigError("rollout.server needs a folder to hand the server the adapters (a run folder)")
        backend = server_client(self.config, self.tokenizer, where=self._last_checkpoint, **process_group(processes))
        backend.sync(self.model, self.policy_adapters, self.live_dir / "step-0")
        return backend

    @classmethod
    def following_server(cls, config: TrainConfig, scenario: Scenario) -> Team:
        """A team without a model that plays through `config.rollout.server` under the adapter
        names another process loaded there (`ServerBackend.follow`): a rollout worker's."""
        from .models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        backend = server_client(config, tokenizer, is_main=False)
        return cls(config, scenario, None, tokenizer, backend, agent_adapter_map(config, scenario))

    def _last_checkpoint(self) -> str:
        """Where a run that stops now resumes from (said when the shared server fails). A
        checkpoint is written under a temporary name and renamed to `step-N` when whole."""
        folder = self.live_dir.parent / "checkpoints"
        steps = [p for p in folder.glob("step-*") if p.name[5:].isdigit()]
        newest = max(steps, key=lambda p: int(p.name[5:]), default=None)
        return f"its last checkpoint {newest}" if newest else f"step 0 (no checkpoint in {folder} yet)"

    def sync(self, version: int) -> None:
        """After an update: make the adapters' weights the ones the backend generates with
        (`version`: the training step that produced them)."""
        folder = self.live_dir / f"step-{version}" if self.live_dir is not None else None
        self.backend.sync(self.model, self.policy_adapters, folder)

    def remove_stale_live_adapters(self) -> list[str]:
        """Delete the folders under `live_dir` that the backend no longer serves: an earlier
        start's (the shared server's client and the vLLM backend delete their own as they go).
        Main process, under the run's lock, before a rollout worker starts. The HF backend
        writes no such folders."""
        folders = getattr(self.backend, "adapter_folders", None)  # the server's client, vLLM in process
        if self.live_dir is None or not self.live_dir.is_dir() or folders is None:
            return []
        in_use = {folder.resolve() for folder in folders()}
        stale = sorted(p for p in self.live_dir.iterdir() if p.is_dir() and p.resolve() not in in_use)
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return [p.name for p in stale]

    @property
    def learner(self) -> str:
        """The one adapter a seated league trains (every agent's)."""
        return SHARED_ADAPTER

    def freeze(self, name: str) -> None:
        """A frozen copy of the learner's adapter, served as `name` beside the live ones and
        never trained (a league snapshot)."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self.add_frozen([name])
        weights = get_peft_model_state_dict(self.model, adapter_name=self.learner)
        set_peft_model_state_dict(self.model, {k: v.detach().clone() for k, v in weights.items()}, adapter_name=name)
        self.serve_frozen([name])

    def add_frozen(self, names: Sequence[str]) -> None:
        """Frozen adapters to be filled (by `freeze`, or a checkpoint's weights on resume); a
        team without a model (`following_server`) only names them: the server serves them."""
        if self.model is not None:
            add_adapters(self.model, names, LoraSettings.from_config(self.config.lora))
            enable_training(self.model, self.policy_adapters)  # adding an adapter made every LoRA weight trainable
        self.frozen += list(names)

    def serve_frozen(self, names: Sequence[str]) -> None:
        """Hand frozen adapters' weights to the backend (vLLM loads them; HF reads the model)."""
        for name in names:
            self.backend.sync(self.model, [name], self.live_dir / name if self.live_dir is not None else None)

    def drop(self, name: str, unserve: bool = True) -> None:
        """Unload a frozen adapter that left the league's pool, here and (unless `unserve` is
        False: a rollout worker may still play a step planned with it; `unserve` it later)
        from the backend's own copy: a shared server then never gets it back after a restart."""
        if self.model is not None:
            self.model.delete_adapter(name)
        self.frozen.remove(name)
        if unserve:
            self.unserve(name)

    def unserve(self, name: str) -> None:
        """Stop serving a dropped frozen adapter where the backend holds a copy of its own (a
        shared server, vLLM in process) and forget it there."""
        unload = getattr(self.backend, "unload", None)  # the HF backend reads the model: nothing to unload
        if unload is not None:
            unload(name)

    def play(
        self, tasks: Sequence[Task], *,
        adapters: Mapping[str, str | None] | Sequence[Mapping[str, str | None]] | str | None = None,
        scenario: Scenario | None = None, **options: Any
    ) -> RolloutBatch:
        """Play `tasks` with this team (`rollout`'s options: group_size, sampling, seed, split,
        log, ...), user code contained (a failing reward marks its episode failed, after
        `reward_timeout_seconds` at most). `adapters`: None for the team's own, `BASE` for
        the untrained base model in every seat, an agent -> adapter map, or one map per task.
        Turns of frozen adapters are never trained. `scenario`: a variant of the team's own
        (`Scenario.with_scripted`: a reference player in some seats)."""
        if adapters is None:
            adapters = self.agent_adapters
        elif isinstance(adapters, str) and adapters == BASE:
            adapters = dict.fromkeys(self.agent_adapters)
        options.setdefault("frozen", self.frozen)
        options.setdefault("contain_failures", True)
        options.setdefault("reward_timeout", self.config.reward_timeout_seconds)
        return rollout(scenario or self.scenario, self.backend, tasks, adapters=adapters, **options)

    def evaluate(self, tasks: Sequence[Task], **options: Any) -> RolloutBatch:
        """Play held-out `tasks` greedily, one episode each, as every evaluation does (`play`'s
        options: adapters, step, log, ...)."""
        sampling = Sampling(greedy=True, max_new_tokens=self.config.max_new_tokens)
        return self.play(tasks, sampling=sampling, seed=self.config.seed, split="eval", **options)

