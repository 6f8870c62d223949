"""Run configuration: pydantic models, YAML files and `--set key=value` overrides.

>>> cfg = load_config("examples/demo.yaml", ["steps=5", "lora.rank=8"])   # doctest: +SKIP
>>> cfg.steps, cfg.lora.rank                                             # doctest: +SKIP
(5, 8)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .branching import leaves_per_task
from .league import LeagueSettings
from .rollout_settings import RolloutConfig, VLLMConfig
from .trainer_settings import AllActionsConfig, CriticConfig, GRPOConfig, LoraConfig, ShapingConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


# Flat keys of earlier versions and the section key that holds each now.
MOVED_KEYS = {"scale_rewards": "grpo.scale_rewards", "reward_source": "grpo.reward_source",
              "credit": "grpo.credit", "gamma": "grpo.gamma"}


def move_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Earlier configs' flat GRPO keys, moved into the `grpo:` section (both spellings work;
    giving both with different values is an error naming the key)."""
    data = dict(data)
    for old, new in MOVED_KEYS.items():
        if old not in data:
            continue
        value = data.pop(old)
        section = dict(data.get("grpo") or {})
        key = new.split(".", 1)[1]
        if key in section and section[key] != value:
            raise ConfigError(f"{old}={value!r} and {new}={section[key]!r} disagree; {old} is now {new}")
        section[key] = value
        data["grpo"] = section
    return data


class TrainConfig(BaseModel):
    """Everything a run needs; `config.yaml` in the run folder is this, resolved."""

    # allow_inf_nan=False: `lr=.inf` would train one step and then NaN.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    scenario: str = Field("debate", description="Scenario name or path/file.py:NAME.")
    scenario_options: dict[str, Any] = Field(default_factory=dict, description="Keyword options for the scenario factory.")
    model: str = Field("smollm2-135m-instruct", description="Alias, HF id or folder; 'tiny' for tests.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Base weight dtype; auto: bfloat16 on a GPU, float32 on a CPU (LoRA weights stay float32)."
    )
    mixed_precision: Literal["no", "bf16"] = Field(
        "bf16",
        description="accelerate's mixed precision: autocast matmuls to bfloat16 in rollout and update "
        "(about 2x faster on CPUs with AVX512-BF16; the usual choice on GPUs).",
    )
    trainer: str = Field(
        "grpo", description="Training algorithm: grpo, critic, all_actions (games that list their legal moves), or a "
        "registered one (trainers/base.py)."
    )
    grpo: GRPOConfig = Field(
        default_factory=GRPOConfig,
        description="Settings of trainer=grpo: group-relative advantages from each episode's outcome (GRPO, "
        "DeepSeekMath), with the Dr. GRPO and SPIRAL variants.",
    )
    critic: CriticConfig = Field(
        default_factory=CriticConfig,
        description="Settings of trainer=critic: a centralised value model over the global state and GAE "
        "advantages per turn (PPO-style actor-critic).",
    )
    all_actions: AllActionsConfig = Field(
        default_factory=AllActionsConfig,
        description="Settings of trainer=all_actions: every legal move's value from move forks "
        "(rollout.move_forks), the policy's expected advantage over them, a magnet KL (MMD).",
    )
    shaping: ShapingConfig = Field(
        default_factory=ShapingConfig,
        description="Reward terms that pay for form (a legal move, a well-formed proposal) and when their "
        "weight anneals to zero.",
    )
    league: LeagueSettings = Field(default_factory=LeagueSettings, description="Self-play against frozen snapshots.")
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig,
        description="How training episodes are played beyond sampling: branching, a shared vLLM server, "
        "the rollout running ahead of the update.",
    )
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="Rollout engine. hf: transformers + peft in this process, every adapter in one "
        "batched generate (the fast path on a CPU); vllm: vLLM in this process with multi-LoRA (one process "
        "only; faster on a GPU). For a shared vLLM server keep hf and set rollout.server."
    )
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig, description="The vLLM engine of backend=vllm (ignored with backend=hf)."
    )
    adapters: Literal["per_role", "shared"] = Field("per_role", description="One adapter per declared role adapter, or one for all.")
    lora: LoraConfig = Field(
        default_factory=LoraConfig,
        description="The LoRA adapters trained on the frozen base model (peft); the critic's value adapter "
        "uses the same settings.",
    )
    steps: int = Field(20, ge=0, description="Training steps (each: rollout -> update).")
    time_budget_minutes: float | None = Field(
        None, gt=0, description="Stop after this much training time (evaluation excluded), even before `steps`: "
        "no step starts that would end more than half a step's time past it. A resumed run gets it afresh."
    )
    token_budget: int | None = Field(
        None, ge=1, description="Stop training once the run has generated this many tokens, every process's every "
        "turn counted (a league's match games too), evaluation excluded (after the step that reaches it), even "
        "before `steps`.",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds every random stream of the run (0 <= seed < 2**32).")
    tasks_per_step: int = Field(4, ge=1, description="Distinct tasks per step (B).")
    group_size: int = Field(8, ge=1, description="Episodes per task (G); advantages are relative within a group.")
    lr: float = Field(
        2e-4, gt=0, description="AdamW learning rate of the policy adapters, after warmup_steps (see lr_schedule). LoRA "
        "takes larger rates than full fine-tuning: the built-in scenarios' train_defaults use 5e-4 to 1e-3 "
        "(SmolLM2-135M, rank 16); lower it when grad_norm spikes or the reward collapses. The critic has its "
        "own (critic.lr)."
    )
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW's decoupled weight decay on the LoRA weights (and the critic's value "
        "adapter and head); 0: none."
    )
    warmup_steps: int = Field(
        0, ge=0, description="Linear learning-rate warmup over the first this many optimizer steps (from "
        "lr / warmup_steps up to lr); a training step takes epochs x minibatches optimizer steps. 0: full lr "
        "from the first step."
    )
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="After warmup: constant, or linear (falling to 0 at the last of `steps` training "
        "steps): a decaying rate lets a self-play policy settle instead of swinging around an equilibrium."
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="Clip the global L2 norm of each optimizer step's gradients (policy adapters, "
        "summed over processes; the critic's separately) to this; metric grad_norm is the norm before clipping."
    )
    epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    minibatches: int = Field(1, ge=1, description="Optimizer steps per epoch.")
    micro_batch_size: int = Field(16, ge=1, description="Samples per forward/backward (gradient accumulation).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory in the update, about a third more update time."
    )
    clip_eps: float = Field(
        0.2, gt=0, description="PPO clip range (low side): the policy ratio is clipped to "
        "[1 - clip_eps, 1 + clip_eps_high]; it bites only with epochs or minibatches > 1 (metric "
        "policy/clip_fraction)."
    )
    clip_eps_high: float | None = Field(
        None, description="Upper clip range (DAPO clip-higher: 0.28 against clip_eps 0.2, room for unlikely "
        "tokens to gain probability); None = clip_eps."
    )
    beta: float = Field(
        0.0, ge=0, description="Weight of a penalty on KL(policy || base model) per completion token: the loss adds "
        "beta x (log pi - log pi_base)^2 / 2 (k2), whose gradient on the policy's own samples is that of "
        "KL(policy || base); metric loss/kl is the k3 estimate of that KL. It acts on every sampled turn, tied "
        "groups included, so an update is skipped only when no turn has an advantage and beta is 0. "
        "The reference is the base model, or with grpo.reference=magnet a slowly refreshed copy of each adapter. "
        "0 skips the reference pass."
    )
    symbol_entropy: float = Field(
        0.0, ge=0, description="Weight of a bonus on the entropy of a symbol channel's messages (per symbol, over "
        "the channel's symbols, renormalised as they are sampled): the sender's entropy term of emergent-"
        "communication training, which keeps a speaker from settling on one message before the listener "
        "has learned anything. It acts on every symbol turn, tied groups included. 0: none."
    )
    importance_sampling_cap: float | None = Field(2.0, gt=0, description="Weigh each token by min(pi_old / pi_sampler, "
        "cap): the sampler's own log-probs correct for a stale sampler (rollout.max_staleness) or another engine's "
        "kernels (None: off; 2 as TRL and verl).")
    loss_aggregation: Literal["sequence_mean", "token_mean", "fixed_length"] = Field(
        "token_mean", description="How per-token losses become one: sequence_mean (GRPO: each completion's "
        "mean, then their mean; a long completion's tokens weigh less), token_mean (DAPO: the mean over every "
        "token of the batch), fixed_length (Dr. GRPO: the sum over completions x the longest, length-unbiased)."
    )
    temperature: float | None = Field(None, ge=0, description="Sampling temperature; None: the scenario's.")
    top_p: float = Field(
        1.0, gt=0, le=1.0, description="Nucleus sampling of training rollouts: sample from the smallest set of "
        "tokens holding this much probability (1: the whole vocabulary). Greedy evaluation ignores it."
    )
    max_new_tokens: int | None = Field(None, ge=1, description="Override the scenario's completion budget.")
    eval_every: int = Field(10, ge=0, description="Held-out evaluation every N steps (0: only before and after).")
    eval_episodes: int = Field(
        50, ge=1, description="Held-out tasks per evaluation, one greedy episode each, drawn from the run's seed "
        "so every evaluation plays the same tasks; also the tasks `eval` plays without --episodes. More: a "
        "smaller standard error (eval/team_reward_se), a longer evaluation."
    )
    save_every: int = Field(
        10, ge=1, description="Write a checkpoint every N steps and at the last; a resumed run restarts from "
        "the newest one, replaying the steps after it."
    )
    keep_checkpoints: int | None = Field(None, ge=1, description="Keep only the newest N checkpoints (None: all).")
    max_failed_fraction: float = Field(
        0.5, ge=0, le=1, description="Stop when more than this share of a step's episodes fail in user code (the reward)."
    )
    fail_fast: bool = Field(False, description="Stop at the first episode whose reward fails.")
    reward_timeout_seconds: float | None = Field(
        60.0, gt=0, description="A reward call that takes longer fails its episode (None: no limit)."
    )
    log_with: list[str] = Field(
        default_factory=lambda: ["tensorboard"], description="accelerate trackers (tensorboard, wandb, ...; each "
        "must be installed) that get the metrics besides metrics.jsonl, which is always written; []: none."
    )
    progress: bool = Field(
        True, description="Progress bars (training steps, and each rollout's rounds under it) on the main "
        "process; false for logs that a bar would clutter."
    )
    max_batch_size: int | None = Field(
        None, ge=1, description="Split a round's generate call into chunks of this size (None: one call for "
        "every acting agent of every episode); set it when a round's batch does not fit in memory."
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return move_flat_keys(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _groups_for_grpo(self) -> TrainConfig:
        # GRPO's advantage is a reward minus its group's mean: a group of one is always 0,
        # so every step would be skipped and nothing would train.
        if self.trainer == "grpo" and leaves_per_task(self.rollout.branching, self.group_size) < 2:
            raise ValueError(
                f"trainer=grpo with group_size={self.group_size} trains nothing (a group of one has no "
                "relative advantage): set group_size >= 2, or trainer=critic"
            )
        return self

    @model_validator(mode="after")
    def _branching_needs_tree(self) -> TrainConfig:
        # A turn shared by several leaves is trained once: only a per-turn estimator says
        # which of its leaves' outcomes it earned.
        if not self.rollout.branching:
            return self
        if self.trainer != "grpo" or self.grpo.advantage != "tree":
            raise ValueError(
                f"rollout.branching needs trainer=grpo with grpo.advantage=tree (it is trainer={self.trainer}, "
                f"grpo.advantage={self.grpo.advantage}): other estimators give a shared turn one leaf's outcome"
            )
        if self.league.mode != "off":
            raise ValueError(f"rollout.branching does not combine with league.mode={self.league.mode}; use one or the other")
        if self.grpo.credit == "discounted":
            raise ValueError("grpo.credit=discounted with grpo.advantage=tree: each turn already has its own advantage")
        return self

    @model_validator(mode="after")
    def _move_forks_with_all_actions(self) -> TrainConfig:
        # A forced move has no generated tokens: only a trainer that scores the moves learns there.
        if (self.rollout.move_forks is not None) != (self.trainer == "all_actions"):
            raise ValueError(
                "trainer=all_actions learns from rollout.move_forks and nothing else does: set both "
                f"(it is trainer={self.trainer}, rollout.move_forks={self.rollout.move_forks})"
            )
        return self

    @model_validator(mode="after")
    def _league_fits_vllm(self) -> TrainConfig:
        # One batch serves the live adapter beside every snapshot it may meet.
        loras = self.vllm.max_loras
        if self.backend == "vllm" and self.league.mode in ("mirror", "pool") and loras is not None \
                and self.league.pool_size + 1 > loras:
            raise ValueError(
                f"league.pool_size={self.league.pool_size} snapshots and the live adapter need "
                f"vllm.max_loras >= {self.league.pool_size + 1} (it is {loras})"
            )
        return self

    @model_validator(mode="after")
    def _rollout_ahead_needs_a_worker(self) -> TrainConfig:
        if self.rollout.max_staleness and self.backend != "hf":
            raise ValueError(f"rollout.max_staleness={self.rollout.max_staleness} plays ahead in a worker process with the "
                             f"hf backend or rollout.server; not with backend={self.backend} (use max_staleness 0)")
        return self

    @model_validator(mode="after")
    def _one_engine(self) -> TrainConfig:
        if self.backend == "vllm" and self.rollout.server:
            raise ValueError(f"backend=vllm runs vLLM in this process, rollout.server={self.rollout.server} is a shared "
                             "vLLM server: one or the other (with rollout.server, leave backend=hf)")
        return self

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        # YAML reads a bare `no` (`--set mixed_precision=no`) as False.
        return "no" if value is False else value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
    scenario_defaults: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
) -> TrainConfig:
    """A validated TrainConfig. Layers, each over the one before: the built-in defaults, the
    scenario's recommended settings (`scenario_defaults`, dotted keys), `base` (a run folder's
    config.yaml), the YAML file at `path` (a section there replaces the layers' section),
    then `key=value` overrides. `sources`, if given, is filled with key -> the layer it came from.
    `ConfigLayers` does the same in two halves, for a caller that must first learn the scenario."""
    return ConfigLayers.read(path, overrides, base).resolve(scenario_defaults, sources)


@dataclass(frozen=True)
class ConfigLayers:
    """What the user gave, read once and not yet validated: `base` (a run folder's config.yaml),
    the YAML file at `path`, then `key=value` overrides. The scenario they pick is known before
    the whole config is, so its recommended settings can go under them:

    >>> layers = ConfigLayers.read("examples/demo.yaml", ["scenario=debate", "steps=5"])  # doctest: +SKIP
    >>> name, options = layers.scenario()                                                   # doctest: +SKIP
    >>> config = layers.resolve(load_scenario(name, **options).train_defaults)              # doctest: +SKIP
    """

    base: dict[str, Any]
    file: dict[str, Any]
    file_name: str | None
    overrides: tuple[tuple[str, Any], ...]

    @classmethod
    def read(cls, path: str | Path | None = None, overrides: list[str] | None = None,
             base: dict | None = None) -> ConfigLayers:
        file = _read_config_file(Path(path)) if path is not None else {}
        parsed = tuple(parse_override(item) for item in overrides or [])
        return cls(dict(base or {}), file, str(Path(path)) if path is not None else None, parsed)

    def scenario(self) -> tuple[str, dict[str, Any]]:
        """(scenario name or path, its options) as the layers give them, checked as `resolve`
        checks them; nothing else is validated yet."""
        data = self._merged({}, {})
        try:
            choice = _ScenarioChoice.model_validate({k: data[k] for k in _ScenarioChoice.model_fields if k in data})
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from exc
        return choice.scenario, dict(choice.scenario_options)

    def resolve(self, scenario_defaults: dict[str, Any] | None = None,
                sources: dict[str, str] | None = None) -> TrainConfig:
        """The validated TrainConfig, `scenario_defaults` (dotted keys) under every layer;
        `sources`, if given, is filled with key -> the layer it came from."""
        data = self._merged(scenario_defaults or {}, sources if sources is not None else {})
        try:
            return TrainConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from exc

    def _merged(self, scenario_defaults: dict[str, Any], record: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in scenario_defaults.items():
            _set_dotted(data, key, value)
            record[key] = "the scenario's recommended settings"
        data.update(copy.deepcopy(self.base))  # the overrides below write into sections
        record.update(dict.fromkeys(self.base, "the run folder's config.yaml"))
        data.update(copy.deepcopy(self.file))
        for key in self.file:
            for known in [k for k in record if k == key or k.startswith(f"{key}.")]:
                del record[known]  # the file's section replaces what the layers below said
            record[key] = f"config file {self.file_name}"
        for key, value in self.overrides:
            _set_dotted(data, key, value)
            record[key] = "--set"
        return data


def _read_config_file(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not text (byte {exc.start} is not UTF-8); give a YAML file") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, got {type(loaded).__name__}")
    return loaded


# The two settings that pick the scenario, checked by TrainConfig's own field definitions.
_ScenarioChoice = create_model(
    "ScenarioChoice",
    scenario=(str, TrainConfig.model_fields["scenario"]),
    scenario_options=(dict[str, Any], TrainConfig.model_fields["scenario_options"]),
)


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(config)"
    if first["type"] == "extra_forbidden":
        return f"unknown config key {key!r}; known keys: {', '.join(TrainConfig.model_fields)}"
    if not first["loc"] and first["type"] == "value_error":  # a check of several keys: its message names them
        return str(first["ctx"]["error"])
    return f"config key {key!r}: {first['msg']} (got {first.get('input')!r})"


# Settings whose change on resume breaks "the resumed run replays what an uninterrupted run
# would": they shape the task stream, the sampling streams or the trained parameters.
STREAM_SETTINGS = (
    "scenario", "scenario_options", "model", "dtype", "seed", "trainer", "adapters", "lora", "tasks_per_step",
    "group_size", "league", "rollout",
)


def changed_settings(before: dict[str, Any], after: TrainConfig) -> dict[str, dict[str, Any]]:
    """Top-level settings that differ between a saved config (as loaded from config.yaml)
    and `after`: {key: {"from": old, "to": new}}."""
    now = after.model_dump()
    try:
        before = move_flat_keys(before)  # a folder written before the trainer sections
        sections = (("grpo", GRPOConfig), ("critic", CriticConfig), ("all_actions", AllActionsConfig),
                    ("league", LeagueSettings), ("shaping", ShapingConfig), ("rollout", RolloutConfig))
        for key, section in sections:  # missing or partial (a folder from before the section): the defaults
            before[key] = section.model_validate(before.get(key) or {}).model_dump()
    except (ConfigError, ValidationError):
        pass  # compared as written
    return {k: {"from": before.get(k), "to": v} for k, v in now.items() if before.get(k) != v}


def save_config(config: TrainConfig, path: str | Path, sources: dict[str, str] | None = None) -> None:
    """Write the resolved config, headed by a comment saying where each non-default value came from."""
    path = Path(path)
    lines = ["# The resolved settings of this run."]
    if sources:
        lines.append("# Where each came from (settings not listed are the built-in defaults):")
        lines += [f"#   {key}: {where}" for key, where in sorted(sources.items())]
    tmp = path.with_suffix(".tmp")
    # Synced like the run folder's other files (trainers/durable.py, which this low layer does
    # not import): the data before the rename, the folder's entry after it.
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n" + yaml.safe_dump(config.model_dump(), sort_keys=False))
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def check_train_defaults(defaults: dict[str, Any], where: str) -> None:
    """A scenario's recommended settings must name real config keys (not the scenario itself)."""
    for key in defaults:
        top = key.split(".", 1)[0]
        if (top not in TrainConfig.model_fields and top not in MOVED_KEYS) or top in ("scenario", "scenario_options"):
            raise ConfigError(f"{where}: train_defaults names {key!r}, not a training setting")
    try:
        load_config(scenario_defaults=defaults)
    except ConfigError as exc:
        raise ConfigError(f"{where}: train_defaults: {exc}") from exc
