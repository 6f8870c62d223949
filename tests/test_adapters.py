"""A run's `lora:` settings become the adapters' LoraSettings in one place."""

from __future__ import annotations

from multiagent_rl.adapters import LoraSettings
from multiagent_rl.config import LoraConfig, load_config


def test_lora_settings_from_a_runs_config():
    lora = load_config(None, ["lora.rank=4", "lora.alpha=8", "lora.dropout=0.1", "lora.target_modules=[q_proj]"]).lora
    assert LoraSettings.from_config(lora) == LoraSettings(rank=4, alpha=8, dropout=0.1, target_modules=["q_proj"])


def test_the_config_and_the_adapters_agree_on_the_defaults():
    assert LoraSettings.from_config(LoraConfig()) == LoraSettings()
