"""Which checkpoint folders count: `checkpoints/step-N` only, the newest that verifies resumes."""

from __future__ import annotations

from trainers.checkpoint import resumable_checkpoint, step_dirs


def test_temporary_and_incomplete_folders_are_not_resumed_from(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete_ in [("step-3", True), (".tmp-step-9", True), ("step-7", False), ("step-x", True)]:
        (root / name).mkdir(parents=True)
        if complete_:
            (root / name / "trainer_state.json").write_text("{}")
    assert step_dirs(tmp_path) == [(3, root / "step-3"), (7, root / "step-7")]  # no temporary or stray folder
    assert resumable_checkpoint(tmp_path) == ((3, root / "step-3"), [(root / "step-7", "no manifest.json")])
    assert resumable_checkpoint(tmp_path / "nothing-here") == (None, [])
