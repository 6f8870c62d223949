"""Magnets: a frozen copy of each trained adapter, refreshed every few updates, that a KL term
pulls the policy toward (magnetic mirror descent, Sokota et al., ICLR 2023: a magnet that
moves slowly lets the last iterate approach an equilibrium of a two-player zero-sum game
instead of cycling). The copies live in the training model beside the adapters they follow,
never trained, and are kept in checkpoints (safetensors)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from multiagent_rl.adapters import LoraSettings, add_adapters, enable_training

SUFFIX = "__magnet"
FILE = "magnet.safetensors"


class Magnets:
    """One magnet per live adapter (`names`: live -> magnet), filled from it at once."""

    def __init__(self, model, live: Sequence[str], lora: LoraSettings, every: int):
        self.model = model
        self.every = every
        self.names = {name: name + SUFFIX for name in live}
        add_adapters(model, list(self.names.values()), lora)
        enable_training(model, list(live))  # adding an adapter made every LoRA weight trainable
        self.refresh()

    def refresh(self) -> None:
        """Copy each live adapter's weights into its magnet."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        for live, magnet in self.names.items():
            weights = get_peft_model_state_dict(self.model, adapter_name=live)
            set_peft_model_state_dict(self.model, {k: v.detach().clone() for k, v in weights.items()}, adapter_name=magnet)

    def after_update(self, updates: int) -> bool:
        """Refresh when `updates` (the count so far) reaches a multiple of `every`; True if it did."""
        if updates % self.every:
            return False
        self.refresh()
        return True

    def save(self, folder: Path) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        tensors = {f"{live}/{key}": value.detach().cpu().contiguous() for live, magnet in self.names.items()
                   for key, value in get_peft_model_state_dict(self.model, adapter_name=magnet).items()}
        save_file(tensors, str(folder / FILE))

    def load(self, folder: Path) -> str | None:
        """The magnets of a checkpoint; one without them (written by a run without magnets)
        starts them from its adapters, and says so."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not (folder / FILE).is_file():
            self.refresh()
            return f"{folder.name} holds no magnets: they start from its adapters"
        tensors = load_file(str(folder / FILE))
        for live, magnet in self.names.items():
            own = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(live + "/")}
            set_peft_model_state_dict(self.model, own, adapter_name=magnet)
        return None
