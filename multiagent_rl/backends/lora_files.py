"""What a peft adapter folder says, read for vLLM: its config, the modules it targets and its
rank, checked before an adapter reaches the engine; and the backend's error type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
# vLLM fuses these projections into one layer (llama-like models); peft names the parts.
PACKED_MODULES = {
    "qkv_proj": {"q_proj", "k_proj", "v_proj"},
    "gate_up_proj": {"gate_proj", "up_proj"},
}


class VLLMBackendError(RuntimeError):
    """A request or adapter the vLLM backend can't serve; the message says why."""


def adapter_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise VLLMBackendError(f"cannot read {path / ADAPTER_CONFIG}: {exc}") from exc
    if not isinstance(config, dict):
        raise VLLMBackendError(f"{path / ADAPTER_CONFIG} is not a JSON object")
    return config


def adapter_targets(config: Mapping[str, Any]) -> set[str] | None:
    """The module names a peft LoRA targets, or None when it can't be told from the
    config (a regex or "all-linear")."""
    targets = config.get("target_modules")
    if (
        isinstance(targets, list | tuple | set)
        and targets
        and all(isinstance(t, str) for t in targets)
    ):
        return set(targets)
    return None


def adapter_rank(config: Mapping[str, Any]) -> int | None:
    rank = config.get("r")
    ranks = [rank] if isinstance(rank, int) else []
    ranks += [r for r in (config.get("rank_pattern") or {}).values() if isinstance(r, int)]
    return max(ranks) if ranks else None
