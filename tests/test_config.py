"""Run configuration: settings that cannot train are refused when the config is read, in one
line naming the fix; config.yaml is written durably."""

from __future__ import annotations

import os

import pytest
import yaml

from multiagent_rl.config import ConfigError, load_config, save_config


def test_grpo_with_groups_of_one_is_refused_naming_the_fix():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["group_size=1"])
    message = str(caught.value)
    assert "\n" not in message
    assert "trainer=grpo with group_size=1" in message
    assert "group_size >= 2" in message and "trainer=critic" in message


def test_groups_of_one_are_fine_for_the_critic():
    assert load_config(None, ["trainer=critic", "group_size=1"]).group_size == 1
    assert load_config(None, ["group_size=2"]).group_size == 2


def test_the_cli_refuses_grpo_with_groups_of_one_in_one_line(capsys, tmp_path):
    from multiagent_rl.cli import main

    code = main(["train", "signalling", "--out", str(tmp_path), "--set", "model=tiny", "--set", "group_size=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "group_size >= 2, or trainer=critic" in err


def test_save_config_syncs_the_file_and_its_folder(monkeypatch, tmp_path):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_config(load_config(None, ["steps=3"]), tmp_path / "config.yaml", {"steps": "--set"})
    folder = tmp_path.resolve()
    assert synced == [str(folder / "config.tmp"), str(folder)]  # the data, then the rename
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["steps"] == 3
    assert not (tmp_path / "config.tmp").exists()
