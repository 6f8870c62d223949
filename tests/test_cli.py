"""The `multiagent-rl` command: one-line errors with exit code 2, and a tiny train ->
eval -> analyse round trip."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multiagent_rl import read_episodes
from multiagent_rl.cli import main
from multiagent_rl.launch import argv_without_processes

SCENARIOS = ["debate", "division_of_labour", "negotiation", "signalling"]
TINY = [
    "--set", "model=tiny", "--set", "steps=1", "--set", "tasks_per_step=1", "--set", "group_size=2",
    "--set", "eval_episodes=1", "--set", "log_with=[]", "--set", "progress=false",
    "--set", "max_new_tokens=3", "--set", "lora.rank=2", "--set", "scenario_options.message_tokens=2",
]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("multiagent-rl: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ----- bad input ----------------------------------------------------------------------------
def test_unknown_scenario(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "no_such_game", "--out", str(tmp_path / "run"), "--set", "model=tiny")
    assert_one_line_error(code, err, "'no_such_game'", "debate")  # names it and what exists
    code, _, err = run_cli(capsys, "play", "no_such_game")
    assert_one_line_error(code, err, "'no_such_game'")


def test_unknown_config_key(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--set", "stepz=3")
    assert_one_line_error(code, err, "unknown config key 'stepz'", "steps")
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--set", "lora.rnak=3")
    assert_one_line_error(code, err, "lora.rnak")


def test_mistyped_value(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--set", "steps=many")
    assert_one_line_error(code, err, "'steps'", "'many'")
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--set", "adapters=each")
    assert_one_line_error(code, err, "'adapters'")
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--set", "steps")
    assert_one_line_error(code, err, "key=value")


def test_bad_config_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--config", str(tmp_path / "none.yaml"))
    assert_one_line_error(code, err, "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path), "--config", str(bad))
    assert_one_line_error(code, err, "mapping")


def test_missing_or_unknown_command(capsys):
    code, _, err = run_cli(capsys)
    assert_one_line_error(code, err, "missing command")
    code, _, err = run_cli(capsys, "fly")
    assert_one_line_error(code, err, "'fly'")
    code, _, err = run_cli(capsys, "train", "debate")  # no --out
    assert_one_line_error(code, err, "--out")


def test_bad_episodes(capsys, tmp_path):
    for command in (["eval", "debate", "--run", str(tmp_path)], ["play", "debate"]):
        code, _, err = run_cli(capsys, *command, "--episodes", "0")
        assert_one_line_error(code, err, "--episodes", "0")
        code, _, err = run_cli(capsys, *command, "--episodes", "two")
        assert_one_line_error(code, err, "--episodes", "'two'")


def test_eval_without_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "debate", "--run", str(tmp_path))
    assert_one_line_error(code, err, "not a run folder")


def test_analyse_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "analyse", str(tmp_path))
    assert_one_line_error(code, err, str(tmp_path), "episodes")
    code, _, err = run_cli(capsys, "analyse", str(tmp_path / "missing"))
    assert_one_line_error(code, err, "missing")


def test_analyse_on_a_run_with_nothing_in_it(capsys, tmp_path):
    (tmp_path / "episodes").mkdir()
    code, _, err = run_cli(capsys, "analyse", str(tmp_path))
    assert_one_line_error(code, err, "no episodes")


def test_scenarios_lists_all_four(capsys):
    code, out, err = run_cli(capsys, "scenarios")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert set(SCENARIOS) <= set(names)
    assert "failed to load" not in out


def test_console_script_bad_command_exits_2_without_traceback():
    script = Path(sys.executable).parent / "multiagent-rl"
    assert script.is_file()
    done = subprocess.run([str(script), "fly"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("multiagent-rl: error: ")


# ----- the config of `train`, resolved once ----------------------------------------------------
class FakeRun:
    """Stands in for trainers.loop.Run: keeps what `train` built and trains nothing."""

    made: list[FakeRun] = []

    def __init__(self, config, run_dir, scenario=None, allow_changes=False, config_sources=None):
        from multiagent_rl.registry import load_scenario

        # as Run does: the scenario the config names, unless one is given
        self.scenario = scenario or load_scenario(config.scenario, **config.scenario_options)
        self.config, self.sources = config, config_sources
        self.ranks = type("Ranks", (), {"is_main": False})()
        FakeRun.made.append(self)

    def train(self) -> dict:
        return {}


@pytest.fixture
def fake_run(monkeypatch):
    import trainers.loop

    FakeRun.made = []
    monkeypatch.setattr(trainers.loop, "Run", FakeRun)
    return FakeRun.made


def test_train_reads_and_validates_its_config_once(fake_run, monkeypatch, capsys, tmp_path):
    import multiagent_rl.config as config_module

    calls = {"read": 0, "resolve": 0}
    read_file, resolve = config_module._read_config_file, config_module.ConfigLayers.resolve

    def counted_read(path):
        calls["read"] += 1
        return read_file(path)

    def counted_resolve(self, *args, **kwargs):
        calls["resolve"] += self.file_name == str(file)  # not the scenario's check of its own defaults
        return resolve(self, *args, **kwargs)

    monkeypatch.setattr(config_module, "_read_config_file", counted_read)
    monkeypatch.setattr(config_module.ConfigLayers, "resolve", counted_resolve)
    file = tmp_path / "c.yaml"
    file.write_text("lr: 0.002\nscenario_options:\n  K: 3\n")
    code, _, err = run_cli(capsys, "train", "signalling", "--out", str(tmp_path / "run"), "--config", str(file),
                           "--set", "scenario_options.message_tokens=2")
    assert code == 0, err
    assert calls == {"read": 1, "resolve": 1}
    (run,) = fake_run
    assert run.scenario.name == "signalling" and run.config.scenario_options == {"K": 3, "message_tokens": 2}
    assert run.config.lr == 0.002 and run.config.group_size == 8  # the file over the scenario's recommended 1e-3
    assert run.sources["scenario"] == "the command line" and run.sources["group_size"].startswith("the scenario's")


def test_set_scenario_picks_the_scenario_and_its_options(fake_run, capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path / "run"), "--set", "scenario=signalling",
                           "--set", "scenario_options.K=3")
    assert code == 0, err
    assert fake_run[0].scenario.name == "signalling" and fake_run[0].config.scenario_options == {"K": 3}


def test_a_bad_scenario_choice_is_one_line_before_the_scenario_loads(fake_run, capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "signalling", "--out", str(tmp_path), "--set", "scenario_options=3")
    assert_one_line_error(code, err, "'scenario_options'", "dictionary")
    code, _, err = run_cli(capsys, "train", "signalling", "--out", str(tmp_path), "--set", "scenario_options.K=x")
    assert_one_line_error(code, err, "K")  # the scenario's own option check
    assert not fake_run


def test_resuming_a_run_of_another_scenario_is_refused(fake_run, capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("scenario: signalling\nscenario_options: {}\n")
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(tmp_path))
    assert_one_line_error(code, err, "is a run of 'signalling', not 'debate'")
    code, _, err = run_cli(capsys, "train", "signalling", "--out", str(tmp_path), "--set", "scenario=debate")
    assert_one_line_error(code, err, "is a run of 'signalling', not 'debate'")
    assert not fake_run


# ----- a tiny run end to end ----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(single_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "signalling", "--out", str(run_dir), *TINY])
    return code, out.getvalue(), err.getvalue(), run_dir


def test_train_writes_a_run_folder(trained):
    code, out, err, run_dir = trained
    assert code == 0, err
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (config["scenario"], config["model"], config["steps"], config["lora"]["rank"]) == ("signalling", "tiny", 1, 2)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1]
    assert sorted(p.name for p in (run_dir / "episodes").glob("*.msgpack"))
    assert (run_dir / "episodes" / "step-000001.msgpack").is_file()
    assert (run_dir / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step-1" / "adapters").iterdir()) == ["listener", "speaker"]
    assert "held-out team reward" in out and "before" in out and "after" in out


def test_eval_prints_base_and_trained_as_json(trained, capsys):
    _, _, _, run_dir = trained
    code, out, err = run_cli(capsys, "eval", "signalling", "--run", str(run_dir), "--episodes", "1")
    assert code == 0, err
    result = json.loads(out)
    assert result["checkpoint"] == "step-1" and result["episodes"] == 1
    for side in ("base", "trained"):
        assert set(result[side]) == {"mean", "se", "n", "accuracy"} and result[side]["n"] == 1
        assert result[side]["accuracy"] in (0.0, 1.0)  # one graded episode: right or wrong
    assert result["change"] == pytest.approx(result["trained"]["mean"] - result["base"]["mean"])


def test_analyse_writes_the_report(trained, capsys):
    _, _, _, run_dir = trained
    code, out, err = run_cli(capsys, "analyse", str(run_dir))
    assert code == 0, err
    assert (run_dir / "report.html").is_file()
    assert "report.html" in out


def test_train_on_an_existing_run_resumes_it(trained, capsys, tmp_path):
    _, _, _, run_dir = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    code, _, err = run_cli(capsys, "train", "debate", "--out", str(copy))
    assert_one_line_error(code, err, "signalling", "debate")
    code, out, err = run_cli(capsys, "train", "signalling", "--out", str(copy), "--set", "steps=2")
    assert code == 0, err
    assert "resumed from: 1" in out
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert (copy / "checkpoints" / "step-2" / "trainer_state.json").is_file()


def test_train_with_two_processes_launches_data_parallel_ranks(tmp_path):
    run_dir = tmp_path / "run"
    script = Path(sys.executable).parent / "multiagent-rl"
    done = subprocess.run(
        [str(script), "train", "signalling", "--out", str(run_dir), "--processes", "2", *TINY, "--set", "tasks_per_step=2"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1] and lines[-1]["runtime/processes"] == 2
    assert sorted(p.name for p in (run_dir / "episodes").glob("step-*.msgpack")) == [
        "step-000001.rank0.msgpack", "step-000001.rank1.msgpack"
    ]
    assert done.stdout.count("held-out team reward") == 1  # the main process reports, once


def test_argv_without_processes_keeps_everything_else():
    argv = ["train", "debate", "--processes", "2", "--out", "r", "--processes=3", "--set", "steps=1"]
    assert argv_without_processes(argv) == ["train", "debate", "--out", "r", "--set", "steps=1"]


def test_eval_votes_over_sampled_episodes_per_task(trained, capsys):
    _, _, _, run_dir = trained
    code, out, err = run_cli(capsys, "eval", "signalling", "--run", str(run_dir), "--episodes", "2", "--vote", "3")
    assert code == 0, err
    result = json.loads(out)
    assert result["vote"] == 3
    for side in ("base", "trained"):
        figures = result[side]
        assert figures["tasks"] == 2 and figures["samples"] == 3
        assert 0 <= figures["vote_accuracy"] <= 1 and 0 <= figures["single_accuracy"] <= 1
        assert figures["generated_tokens_per_task"] > 0
        log = run_dir / "evals" / "step-1" / f"vote-3-{side}-step-000001.msgpack"
        assert len(read_episodes(log).episodes) == 6
    code, _, err = run_cli(capsys, "eval", "signalling", "--run", str(run_dir), "--vote", "0")
    assert_one_line_error(code, err, "--vote must be at least 1")
