"""Role -> LoRA adapter map, and creating / saving / loading adapters in peft format.

Roles naming the same adapter share it (and learn from all of their turns);
`mode="shared"` puts every role on one adapter. The base weights are frozen.

>>> adapter_map(scenario, "per_role")   # doctest: +SKIP
{'solver_a': 'solver_a', 'solver_b': 'solver_b'}
>>> model = attach_adapters(base, ["solver_a", "solver_b"], LoraSettings(rank=16))  # doctest: +SKIP
>>> save_adapters(model, "run/checkpoints/step-10/adapters")                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .config import LoraConfig
from .scenario import Scenario, ScenarioError

SHARED_ADAPTER = "shared"
ADAPTER_MODES = ("per_role", "shared")
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))

    @classmethod
    def from_config(cls, lora: LoraConfig) -> LoraSettings:
        """The settings of a run's `lora:` section (`config.LoraConfig`): the one conversion."""
        return cls(lora.rank, lora.alpha, lora.dropout, list(lora.target_modules))


def adapter_map(scenario: Scenario, mode: str = "per_role") -> dict[str, str]:
    """agent -> adapter name: as the scenario declares (`per_role`) or one for all (`shared`);
    scripted roles are not in it."""
    played = [r for r in scenario.roles if not r.scripted]  # scripted roles have no adapter
    if mode == "per_role":
        return {r.name: r.adapter_name for r in played}
    if mode == "shared":
        return {r.name: SHARED_ADAPTER for r in played}
    raise ScenarioError(f"unknown adapters mode {mode!r}; use one of {ADAPTER_MODES}")


def adapter_names(mapping: Mapping[str, str]) -> list[str]:
    """Distinct adapter names in first-use order."""
    return list(dict.fromkeys(mapping.values()))


def attach_adapters(model, names: Iterable[str], settings: LoraSettings):
    """Wrap `model` in a PeftModel with one fresh LoRA adapter per name; base weights frozen."""
    from peft import get_peft_model

    names = list(names)
    if not names:
        raise ScenarioError("attach_adapters needs at least one adapter name")
    try:
        peft_model = get_peft_model(model, _lora_config(settings), adapter_name=names[0])
    except ValueError as exc:  # e.g. target modules the model does not have
        message = " ".join(str(exc).split())[:300]
        raise ScenarioError(f"lora.target_modules={list(settings.target_modules)} does not fit the model: {message}") from exc
    return add_adapters(peft_model, names[1:], settings)


def add_adapters(peft_model, names: Iterable[str], settings: LoraSettings):
    """Add fresh LoRA adapters to a PeftModel (each name new); only LoRA weights require grad."""
    for name in names:
        if name in peft_model.peft_config:
            raise ScenarioError(f"adapter {name!r} exists already; adapters: {', '.join(peft_model.peft_config)}")
        peft_model.add_adapter(name, _lora_config(settings))
    for pname, param in peft_model.named_parameters():
        param.requires_grad = "lora_" in pname
    return peft_model


def _lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )


def adapter_parameters(peft_model, name: str) -> dict[str, object]:
    """The named adapter's parameters (name -> tensor parameter)."""
    marker = f".{name}."
    return {n: p for n, p in peft_model.named_parameters() if "lora_" in n and marker in n}


def enable_training(peft_model, names: Iterable[str]) -> None:
    """Make exactly the LoRA weights of `names` trainable (peft's set_adapter would freeze the rest)."""
    wanted = {f".{n}." for n in names}
    for pname, param in peft_model.named_parameters():
        param.requires_grad = "lora_" in pname and any(w in pname for w in wanted)


def save_adapters(peft_model, out_dir: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Save each adapter as `out_dir/<name>/` (adapter_config.json + adapter_model.safetensors)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out = Path(out_dir)
    written = []
    for name in names or list(peft_model.peft_config):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(peft_model, adapter_name=name)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, folder / "adapter_model.safetensors")
        config = peft_model.peft_config[name].to_dict()
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
        written.append(folder)
    return written


def load_adapter_weights(peft_model, adapters_dir: str | Path) -> list[str]:
    """Load every `adapters_dir/<name>/` into the adapter of that name (which must exist)."""

    loaded = []
    for folder in sorted(Path(adapters_dir).iterdir()):
        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            continue
        if folder.name not in peft_model.peft_config:
            known = ", ".join(peft_model.peft_config)
            raise ScenarioError(f"checkpoint has adapter {folder.name!r} but the model has only: {known}")
        load_adapter_as(peft_model, folder, folder.name)
        loaded.append(folder.name)
    return loaded


def load_adapter_as(peft_model, folder: str | Path, name: str) -> None:
    """Load the adapter saved in `folder` into the model's adapter `name` (which must exist):
    another run's adapter as a frozen opponent, or a checkpoint's under its own name."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(Path(folder) / "adapter_model.safetensors"), adapter_name=name)

