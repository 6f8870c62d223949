"""Bad input at the command line: one line on stderr, exit code 2, no traceback; user code
that fails names its file and line. `--debug` shows the traceback. With `--processes N`, a
rank's one-line error is said once; a rank that crashes still shows the launcher's account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from multiagent_rl.cli import main

TINY = ["--set", "model=tiny", "--set", "steps=1", "--set", "tasks_per_step=1", "--set", "group_size=2",
        "--set", "eval_episodes=1", "--set", "log_with=[]", "--set", "progress=false", "--set", "max_new_tokens=3",
        "--set", "lora.rank=2", "--set", "scenario_options.message_tokens=2"]


def one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("multiagent-rl: error: "), err
    return err


@pytest.fixture
def files(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe" * 50)
    (tmp_path / "broken.yaml").write_text("steps: 3\nlr: [0.1\n")
    (tmp_path / "syntax.py").write_text("x = 1\ndef make(:\n")
    (tmp_path / "raises.py").write_text("import math\nraise RuntimeError('no scenario today')\n")
    (tmp_path / "a-file").write_text("")
    return tmp_path


@pytest.mark.parametrize("argv, expected", [
    (["--set", "seed=18446744073709551616"], "seed"),
    (["--set", "seed=-1"], "seed"),
    (["--set", "model=/no/such/model"], "cannot load a tokenizer for model '/no/such/model'"),
    (["--set", "lora.target_modules=[nope]"], "lora.target_modules=['nope'] does not fit the model"),
    (["--set", "lr=.inf"], "'lr'"),
    (["--set", "gamma=.nan"], "'grpo.gamma'"),
    (["--set", "group_size=100000"], "lower group_size"),
    (["--config", "{files}/binary.yaml"], "is not text"),
    (["--config", "{files}/broken.yaml"], "not valid YAML at line 3"),
])
def test_bad_train_settings_are_one_line(single_thread, capsys, files, argv, expected):
    argv = [a.replace("{files}", str(files)) for a in argv]
    err = one_line_error(capsys, "train", "signalling", "--out", str(files / "run"), *TINY, *argv)
    assert expected in err


@pytest.mark.parametrize("scenario, expected", [
    ("syntax.py:make", "syntax.py:2 has a syntax error"),
    ("raises.py:make", "raised RuntimeError: no scenario today at {files}/raises.py:2"),
])
def test_a_scenario_file_that_fails_names_its_file_and_line(capsys, files, scenario, expected):
    err = one_line_error(capsys, "train", f"{files}/{scenario}", "--out", str(files / "run"), *TINY)
    assert expected.replace("{files}", str(files)) in err


@pytest.mark.parametrize("option, expected", [
    ("opponent=bogus", "tictactoe: opponent='bogus'; use one of random, perfect, model"),
    ("invalid=bogus", "tictactoe: invalid='bogus'"),
    ("legal_move_reward=high", "legal_move_reward must be a finite number"),
    ("no_such_option=1", "unexpected keyword argument 'no_such_option'"),
])
def test_a_bad_scenario_option_is_one_line(capsys, option, expected):
    err = one_line_error(capsys, "play", "tictactoe", "--set", f"scenario_options.{option}")
    assert expected in err


@pytest.mark.parametrize("out, expected", [("", "--out is empty"), ("{files}/a-file", "is a file, not a folder")])
def test_a_bad_out_is_refused_before_the_model_loads(capsys, files, out, expected):
    err = one_line_error(capsys, "train", "signalling", "--out", out.replace("{files}", str(files)), *TINY)
    assert expected in err


def test_resuming_with_another_lora_rank_or_model_is_one_line(single_thread, capsys, tmp_path):
    run = str(tmp_path / "run")
    assert main(["train", "signalling", "--out", run, *TINY]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, "train", "signalling", "--out", run, *TINY, "--set", "lora.rank=4", "--set", "steps=2")
    assert "lora" in err and "--allow-changes" in err
    err = one_line_error(capsys, "train", "signalling", "--out", run, *TINY, "--set", "lora.rank=4", "--set", "steps=2",
                         "--allow-changes")
    assert "does not fit this run's model" in err


def test_debug_shows_the_traceback(capsys, files):
    with pytest.raises(Exception, match="no scenario today"):
        main(["train", f"{files}/raises.py:make", "--out", str(files / "run"), "--debug", *TINY])


def launched(*argv: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "multiagent-rl"
    return subprocess.run([str(script), *argv, "--processes", "2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_an_error_the_ranks_find_is_said_once_with_two_processes(tmp_path):
    done = launched("train", "signalling", "--out", str(tmp_path / "run"), *TINY, "--set", "model=/no/such/model")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("multiagent-rl: error: cannot load a tokenizer"), done.stderr


CRASHES_ON_RANK_1 = """
import os

from multiagent_rl.registry import load_scenario


def make(**options):
    if os.environ.get("RANK") == "1":
        os._exit(3)
    return load_scenario("signalling", **options)
"""


def test_a_rank_that_crashes_still_shows_the_launchers_account(tmp_path):
    (tmp_path / "crash.py").write_text(CRASHES_ON_RANK_1)
    done = launched("train", f"{tmp_path}/crash.py:make", "--out", str(tmp_path / "run"), *TINY)
    assert done.returncode == 3, done.stderr
    assert "multiagent_rl.cli FAILED" in done.stderr and "exitcode  : 3" in done.stderr, done.stderr
    assert "multiagent-rl: error" not in done.stderr
