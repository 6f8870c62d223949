"""What a run runs on: the trackers of `log_with` are checked before anything loads."""

from __future__ import annotations

import accelerate.tracking
import pytest
from accelerate.utils import LoggerType

from multiagent_rl.cli import main
from multiagent_rl.config import ConfigError
from trainers.runtime import check_trackers

TRACKERS = [t.value for t in LoggerType if t is not LoggerType.ALL]


@pytest.fixture
def nothing_installed(monkeypatch):
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_tracker_not_installed_is_refused_naming_the_package(nothing_installed, tracker):
    with pytest.raises(ConfigError, match=f"log_with: {tracker} is not installed; pip install {tracker}"):
        check_trackers([tracker])


def test_installed_trackers_all_and_none_pass(monkeypatch):
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    assert check_trackers(["tensorboard", "", "all"]) == ["tensorboard", "all"]
    assert check_trackers([]) == []


def test_an_unknown_tracker_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown tracker 'wandbb'; accelerate knows: all, .*wandb"):
        check_trackers(["wandbb"])


def test_train_refuses_a_missing_tracker_in_one_line_before_the_model_loads(nothing_installed, capsys, tmp_path):
    # The model does not exist: had it been loaded first, its error would be the one shown.
    code = main(["train", "signalling", "--out", str(tmp_path), "--set", "model=/no/such/model",
                 "--set", "log_with=[wandb]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "pip install wandb" in err
