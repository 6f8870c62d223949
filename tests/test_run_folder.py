"""A run folder with one writer and one committed state: the lock, and the restore that moves
records after the last checkpoint (or before the first) to quarantine/ instead of appending
them twice or deleting them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from multiagent_rl import read_episodes
from multiagent_rl.cli import main
from multiagent_rl.config import load_config
from trainers.checkpoint import remove_temporary
from trainers.durable import write_atomic
from trainers.loop import Run
from trainers.run_folder import (
    RunFolderError,
    RunLock,
    plan_restore,
    restore_committed_state,
    strategy_path,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from duo_run import duo  # noqa: E402  (rewards that always differ: every step updates)


def config(*overrides: str):
    return load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=3",
        "eval_episodes=2", "eval_every=0", "save_every=2", "lora.rank=4", "lr=0.01", *overrides,
    ])


def steps_in(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def quarantined(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "quarantine").rglob("*")) if (run_dir / "quarantine").is_dir() else []


def test_a_restart_before_the_first_checkpoint_writes_each_step_once(single_thread, tmp_path):
    first = Run(config("steps=1", "save_every=5"), tmp_path, scenario=duo())
    first.train()  # steps=1 is also the last step, so it checkpoints: take the checkpoint away
    for folder in (tmp_path / "checkpoints").iterdir():
        for f in sorted(folder.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        folder.rmdir()
    Run(config("steps=2"), tmp_path, scenario=duo()).train()
    assert steps_in(tmp_path) == [0, 1, 2]
    one_log = read_episodes(tmp_path / "episodes" / "step-000001.msgpack").episodes
    assert len(one_log) == 2 * 3  # one step's episodes, not two steps' worth
    note = next(p for p in quarantined(tmp_path) if p.name == "NOTE.txt").read_text()
    assert "before the first checkpoint" in note
    moved = [p.name for p in quarantined(tmp_path) if p.suffix == ".msgpack"]
    assert "step-000001.msgpack" in moved and "eval-step-000000.msgpack" in moved


def test_records_after_the_checkpoint_move_to_quarantine_and_are_replayed(single_thread, tmp_path):
    Run(config("steps=3"), tmp_path, scenario=duo()).train()  # checkpoints at 2 and 3
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "step-3")
    Run(config("steps=3"), tmp_path, scenario=duo()).train()
    assert steps_in(tmp_path) == [0, 1, 2, 3]
    moved_lines = (next(p for p in quarantined(tmp_path) if p.name == "metrics.jsonl")).read_text().splitlines()
    assert [json.loads(line)["step"] for line in moved_lines] == [3]


@pytest.mark.parametrize("bad, why", [
    (b"[1, 2]\n", "not an object"),
    (b'{"step": null}\n', "not a whole number"),
    (b'{"step": 1, "x": "\xff"}\n', "not UTF-8"),
    (b'{"step": 1, "loss', "not JSON"),
    (b'{"step": 1}\n', "already recorded"),
])
def test_bad_metrics_lines_are_quarantined_with_the_reason(tmp_path, bad, why):
    good = b'{"step": 0}\n{"step": 1}\n'
    (tmp_path / "metrics.jsonl").write_bytes(good + bad)
    notes = restore_committed_state(tmp_path, step=1)
    assert len(notes) == 1 and "quarantine" in notes[0]
    assert (tmp_path / "metrics.jsonl").read_bytes() == good
    note = next(p for p in quarantined(tmp_path) if p.name == "NOTE.txt").read_text()
    assert why in note


def test_a_stray_log_is_moved_before_anything_else_changes(tmp_path):
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    (episodes / "step-final.msgpack").write_bytes(b"x")
    (episodes / "step-000001.msgpack").write_bytes(b"x")
    (episodes / "step-000002.rank1.msgpack").write_bytes(b"x")
    plan = plan_restore(tmp_path, step=1)
    assert sorted(p.name for p, _ in plan.moved_files) == ["step-000002.rank1.msgpack", "step-final.msgpack"]
    restore_committed_state(tmp_path, step=1)
    assert sorted(p.name for p in episodes.iterdir()) == ["step-000001.msgpack"]
    assert restore_committed_state(tmp_path, step=1) == []  # a committed folder is left as it is


def test_strategy_tables_after_the_checkpoint_move_to_quarantine_like_the_episode_logs(tmp_path):
    for step in (0, 2, 4):
        write_atomic(strategy_path(tmp_path, step), json.dumps({"step": step, "policy": {}}))
    (tmp_path / "strategy" / "step-000006.json.tmp").write_text("{")  # a write cut short by a crash: deleted
    (tmp_path / "strategy" / "best.json").write_text("{}")  # a stray: moved aside
    assert remove_temporary(tmp_path) == ["step-000006.json.tmp"]
    notes = restore_committed_state(tmp_path, step=2)
    assert sorted(p.name for p in (tmp_path / "strategy").iterdir()) == ["step-000000.json", "step-000002.json"]
    moved = {p.name for p in quarantined(tmp_path) if p.parent.name == "strategy"}
    assert moved == {"best.json", "step-000004.json"} and len(notes) == 2
    note = next(p for p in quarantined(tmp_path) if p.name == "NOTE.txt").read_text()
    assert "strategy/step-000004.json: after step 2, the last checkpoint" in note
    assert "strategy/best.json: its name carries no step (expected step-NNNNNN.json)" in note
    restore_committed_state(tmp_path, step=None)  # nothing committed: every table goes
    assert not list((tmp_path / "strategy").iterdir())


def test_a_second_writer_is_refused_naming_the_holder(single_thread, tmp_path, capsys):
    with RunLock(tmp_path, "train"):
        with pytest.raises(RunFolderError, match=r"in use by process \d+ \(train\)"):
            RunLock(tmp_path, "eval").acquire()
        run = Run(config("steps=1"), tmp_path, scenario=duo())
        with pytest.raises(RunFolderError):
            run.train()
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before writing anything
    RunLock(tmp_path, "train").acquire().release()  # free again once the holder is done


def test_the_cli_refuses_a_locked_folder_in_one_line(single_thread, tmp_path, capsys):
    with RunLock(tmp_path, "train"):
        code = main(["train", "signalling", "--out", str(tmp_path), "--set", "model=tiny", "--set", "steps=1",
                     "--set", "log_with=[]", "--set", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "in use by process" in err


def test_eval_writes_under_evals_not_into_the_training_records(single_thread, tmp_path, capsys):
    run_dir = tmp_path / "run"
    tiny = ["--set", "model=tiny", "--set", "steps=1", "--set", "tasks_per_step=1", "--set", "group_size=2",
            "--set", "eval_episodes=1", "--set", "log_with=[]", "--set", "progress=false", "--set", "max_new_tokens=3",
            "--set", "lora.rank=2", "--set", "scenario_options.message_tokens=2"]
    assert main(["train", "signalling", "--out", str(run_dir), *tiny]) == 0
    before = sorted(p.name for p in (run_dir / "episodes").iterdir())
    capsys.readouterr()
    assert main(["eval", "signalling", "--run", str(run_dir), "--episodes", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in (run_dir / "episodes").iterdir()) == before
    assert sorted(p.name for p in (run_dir / "evals" / "step-1").iterdir()) == [
        "base-step-000001.msgpack", "trained-step-000001.msgpack"
    ]
    assert result["log"] == str(run_dir / "evals" / "step-1")


# ----- checkpoints: manifest, verification, fall-back, retention ------------------------------
def damage_newest(run_dir: Path, how: str) -> Path:
    step = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").iterdir())
    folder = run_dir / "checkpoints" / f"step-{step}"
    target = folder / "adapters" / "solver" / "adapter_model.safetensors"
    if how == "missing adapter":
        for f in (folder / "adapters" / "solver").iterdir():
            f.unlink()
        (folder / "adapters" / "solver").rmdir()
    elif how == "garbage":
        target.write_bytes(b"\x00garbage" * 100)
    elif how == "cut":
        target.write_bytes(target.read_bytes()[:100])
    elif how == "empty state":
        (folder / "trainer_state.json").write_text("")
    elif how == "cut manifest":
        (folder / "manifest.json").write_text('{"files": {')
    return folder


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
    """A run with checkpoints at steps 2 and 4, and the weights a clean resume from 2 ends with."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpt")
    Run(config("steps=4"), root / "run", scenario=duo()).train()
    return root / "run"


@pytest.mark.parametrize("how", ["missing adapter", "garbage", "cut", "empty state", "cut manifest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(four_steps, tmp_path, how, capsys):
    import shutil

    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    shutil.copytree(four_steps, run_dir)
    damage_newest(run_dir, how)
    Run(config("steps=4"), run_dir, scenario=duo()).train()
    err = capsys.readouterr().err
    assert "checkpoints/step-4" in err and "damaged checkpoint" in err
    assert steps_in(run_dir) == [0, 1, 2, 3, 4]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[3]["resume/damaged_checkpoints"] == 1  # said in the metrics of the first replayed step
    assert any(p.name == "step-4" for p in quarantined(run_dir))  # kept aside, not deleted
    # the replayed step 4 is the uninterrupted run's step 4, bit for bit
    for adapter in ("solver", "critic"):
        name = f"checkpoints/step-4/adapters/{adapter}/adapter_model.safetensors"
        a, b = load_file(four_steps / name), load_file(run_dir / name)
        assert all(a[k].equal(b[k]) for k in a)


def test_checkpoints_carry_a_manifest_and_only_the_newest_n_are_kept(single_thread, tmp_path):
    from trainers.checkpoint import verify_checkpoint

    Run(config("steps=6", "keep_checkpoints=2"), tmp_path, scenario=duo()).train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-6"]
    manifest = json.loads((tmp_path / "checkpoints" / "step-6" / "manifest.json").read_text())
    assert "adapters/solver/adapter_model.safetensors" in manifest["files"] and manifest["versions"]["torch"]
    assert verify_checkpoint(tmp_path / "checkpoints" / "step-6") is None


def test_a_crash_inside_a_checkpoint_write_leaves_nothing_behind(single_thread, tmp_path, monkeypatch):
    import trainers.checkpoint as checkpoint

    run = Run(config("steps=1"), tmp_path, scenario=duo())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path, 1, run.model, run.optimizer, run.scheduler)
    assert list((tmp_path / "checkpoints").iterdir()) == []
    (tmp_path / "checkpoints" / ".tmp-step-7").mkdir()  # left by a SIGKILL mid-write
    assert checkpoint.remove_temporary(tmp_path) == [".tmp-step-7"]


# ----- resume with other settings -----------------------------------------------------------
def test_resuming_with_a_changed_stream_setting_is_refused_unless_allowed(single_thread, tmp_path):
    from multiagent_rl.config import ConfigError

    Run(config("steps=1"), tmp_path, scenario=duo()).train()
    from multiagent_rl.config import save_config

    save_config(config("steps=1"), tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=r"trained with seed=0, not 7.*--allow-changes"):
        Run(config("steps=2", "seed=7"), tmp_path, scenario=duo()).train()
    assert steps_in(tmp_path) == [0, 1]  # nothing written by the refused run
    Run(config("steps=2", "seed=7"), tmp_path, scenario=duo(), allow_changes=True).train()
    changes = [json.loads(line) for line in (tmp_path / "config-changes.jsonl").read_text().splitlines()]
    assert changes[-1]["step"] == 2 and changes[-1]["changes"]["seed"] == {"from": 0, "to": 7}
    assert steps_in(tmp_path) == [0, 1, 2]


def test_changing_only_how_often_to_evaluate_is_recorded_not_refused(single_thread, tmp_path):
    from multiagent_rl.config import save_config

    Run(config("steps=1"), tmp_path, scenario=duo()).train()
    save_config(config("steps=1"), tmp_path / "config.yaml")
    Run(config("steps=2", "eval_every=5"), tmp_path, scenario=duo()).train()
    change = json.loads((tmp_path / "config-changes.jsonl").read_text().splitlines()[-1])
    assert set(change["changes"]) == {"steps", "eval_every"}


# ----- failing user code ----------------------------------------------------------------------
def flaky(every: int = 10, hang: bool = False, nan: bool = False):
    """duo whose reward raises (hangs, or returns NaN) on tasks whose number divides by `every`."""
    scenario = duo()
    plain = scenario.reward

    def reward(task, episode):
        if int(task.key[1:]) % every == 0:
            if hang:
                time.sleep(60)
            if nan:
                return {a: float("nan") for a in scenario.agents}
            raise ValueError(f"cannot score {task.key}")
        return plain(task, episode)

    scenario.reward = reward
    return scenario


import time  # noqa: E402


def test_a_reward_that_raises_on_some_tasks_drops_their_groups_and_training_goes_on(single_thread, tmp_path):
    run = Run(config("steps=4", "tasks_per_step=4", "max_failed_fraction=0.9"), tmp_path, scenario=flaky(every=3))
    run.train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    failed = [m["episodes/failed_fraction"] for m in lines[1:]]
    assert any(0 < f < 1 for f in failed), failed  # some groups failed, the others trained
    assert all(m["update/skipped"] == 0.0 for m in lines[1:] if m["episodes/failed_fraction"] < 1)
    episodes = [e for step in range(1, 5) for e in read_episodes(tmp_path / "episodes" / f"step-{step:06d}.msgpack").episodes]
    bad = [e for e in episodes if e.failure]
    assert bad and all(int(e.task.key[1:]) % 3 == 0 for e in bad)
    assert all("ValueError: cannot score" in e.failure and "test_run_folder.py:" in e.failure for e in bad)
    assert all(e.task.key in e.failure for e in bad)


def test_too_many_failures_or_fail_fast_stop_with_one_line(single_thread, tmp_path):
    from multiagent_rl.contain import UserCodeError

    with pytest.raises(UserCodeError, match=r"step 1: 6 of 6 episodes failed \(more than max_failed_fraction=0.5\)"):
        Run(config("steps=2"), tmp_path / "a", scenario=flaky(every=1)).train()
    assert read_episodes(tmp_path / "a" / "episodes" / "step-000001.msgpack").episodes[0].failure  # batch kept
    with pytest.raises(UserCodeError, match=r"fail_fast is on.*first: the reward of scenario 'duo' raised ValueError"):
        Run(config("steps=5", "tasks_per_step=4", "fail_fast=true"), tmp_path / "b", scenario=flaky(every=2)).train()


def test_a_reward_that_hangs_is_stopped_by_the_time_limit(single_thread, tmp_path):
    start = time.monotonic()
    from multiagent_rl.contain import UserCodeError

    with pytest.raises(UserCodeError, match="TimeoutError: took longer than 0.2 s"):
        Run(config("steps=1", "reward_timeout_seconds=0.2", "fail_fast=true"), tmp_path, scenario=flaky(1, hang=True)).train()
    assert time.monotonic() - start < 30


def test_a_nan_reward_fails_its_episode_not_the_run(single_thread, tmp_path):
    Run(config("steps=2", "tasks_per_step=4", "max_failed_fraction=0.9"), tmp_path, scenario=flaky(every=2, nan=True)).train()
    episodes = [e for s in (1, 2) for e in read_episodes(tmp_path / "episodes" / f"step-{s:06d}.msgpack").episodes]
    bad = [e for e in episodes if e.failure]
    assert bad and all("is nan; rewards must be finite" in e.failure for e in bad)
    assert steps_in(tmp_path) == [0, 1, 2]


def test_analyse_into_a_folder_in_use_is_refused_and_stale_partial_reports_are_removed(single_thread, tmp_path, capsys):
    Run(config("steps=1"), tmp_path, scenario=duo()).train()
    (tmp_path / ".report-abc123.html").write_text("")  # left by an analyse killed mid-write
    with RunLock(tmp_path, "train"):
        assert main(["analyse", str(tmp_path)]) == 2
    assert "in use by process" in capsys.readouterr().err
    assert main(["analyse", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").stat().st_size > 0 and not list(tmp_path.glob(".report-*.html"))


def test_temporary_files_of_a_cut_write_are_removed_at_start(single_thread, tmp_path):
    Run(config("steps=1"), tmp_path, scenario=duo()).train()
    (tmp_path / "metrics.jsonl.tmp").write_text("half")
    (tmp_path / "checkpoints" / ".tmp-step-2").mkdir()
    Run(config("steps=2"), tmp_path, scenario=duo()).train()
    assert not list(tmp_path.glob("*.tmp")) and not list((tmp_path / "checkpoints").glob(".tmp-*"))
