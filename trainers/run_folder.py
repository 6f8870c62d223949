"""A run folder with one writer and one committed state.

- `RunLock`: an OS file lock on `RUN/.lock` (released by the kernel when its process dies,
  SIGKILL included); a second trainer or evaluator on the same folder is refused with one
  line naming the holder.
- `restore_committed_state`: on every start the folder is brought back to its last committed
  step (the newest checkpoint's, or nothing before the first checkpoint). Records of later
  steps, records seen twice, lines that are not metrics records and log or strategy files
  whose names carry no step are moved to `quarantine/<time>/` with a NOTE.txt saying what and
  why: never deleted, never appended twice.
- `strategy_path`: where an evaluation's strategy table goes, `strategy/step-NNNNNN.json`.

>>> with RunLock(run_dir, "train"):                        # doctest: +SKIP
...     notes = restore_committed_state(run_dir, step=4)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from multiagent_rl.config import STREAM_SETTINGS, ConfigError, TrainConfig, changed_settings

from .durable import fsync_dir, write_synced

LOCK_FILE = ".lock"
QUARANTINE = "quarantine"
# episodes/<tag>step-NNNNNN[.rankR].msgpack
LOG_STEP = re.compile(r"^(?:[a-z-]*-)?step-(\d+)(?:\.rank\d+)?\.msgpack$")
STRATEGY = "strategy"
# strategy/step-NNNNNN.json: an OpenSpiel game's strategy table at an evaluation
STRATEGY_STEP = re.compile(r"^step-(\d+)\.json$")
# Per-step record files: folder, what they are, name pattern, the name expected.
STEP_FILES = (("episodes", "log", LOG_STEP, "[tag-]step-NNNNNN[.rankR].msgpack"),
              (STRATEGY, "strategy", STRATEGY_STEP, "step-NNNNNN.json"))


def strategy_path(run_dir: Path, step: int) -> Path:
    """The strategy table of the evaluation at `step`: information state -> move -> probability."""
    return Path(run_dir) / STRATEGY / f"step-{step:06d}.json"


class RunFolderError(RuntimeError):
    """The run folder is in use or cannot be brought to a committed state; one line says why."""


class RunLock:
    """Exclusive lock on a run folder for the life of this object (a context manager)."""

    def __init__(self, run_dir: str | Path, purpose: str):
        self.path = Path(run_dir) / LOCK_FILE
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish or give another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({self.purpose})\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Plan:
    """What restoring the committed state will do, decided before anything moves."""

    keep_lines: list[str] = field(default_factory=list)
    moved_lines: list[tuple[str, str]] = field(default_factory=list)  # (line, why)
    moved_files: list[tuple[Path, str]] = field(default_factory=list)  # (path, why)

    @property
    def empty(self) -> bool:
        return not self.moved_lines and not self.moved_files


def plan_restore(run_dir: Path, step: int | None) -> Plan:
    """Which records to keep for committed step `step` (None: no checkpoint, nothing committed)."""
    plan = Plan()
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        seen: set[int] = set()
        for raw in metrics.read_bytes().split(b"\n"):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", "replace")
            why = _metrics_line_problem(raw, step, seen)
            if why is None:
                plan.keep_lines.append(line)
            else:
                plan.moved_lines.append((line, why))
    for name, kind, pattern, expected in STEP_FILES:
        folder = run_dir / name
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            found = pattern.match(path.name)
            if not path.is_file():
                plan.moved_files.append((path, f"not a {kind} file"))
            elif found is None:
                plan.moved_files.append((path, f"its name carries no step (expected {expected})"))
            elif step is None or int(found.group(1)) > step:
                plan.moved_files.append((path, _after(step)))
    return plan


def _after(step: int | None) -> str:
    return "written before the first checkpoint" if step is None else f"after step {step}, the last checkpoint"


def _metrics_line_problem(raw: bytes, step: int | None, seen: set[int]) -> str | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError:
        return "not JSON (cut by a crash?)"
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    value = record.get("step")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return f"its step is {value!r}, not a whole number >= 0"
    if step is None or value > step:
        return _after(step)
    if value in seen:
        return f"step {value} is already recorded above"
    seen.add(value)
    return None


def restore_committed_state(
    run_dir: str | Path, step: int | None, damaged_checkpoints: list[tuple[Path, str]] = ()
) -> list[str]:
    """Bring `run_dir` back to committed step `step`; returns one line per kind of move.
    `damaged_checkpoints` (newer than `step`, failing verification) are moved aside too."""
    run_dir = Path(run_dir)
    plan = plan_restore(run_dir, step)
    plan.moved_files += [(path, f"damaged checkpoint: {why}") for path, why in damaged_checkpoints]
    if plan.empty:
        return []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / QUARANTINE / stamp
    n = 1
    while target.exists():
        n += 1
        target = run_dir / QUARANTINE / f"{stamp}-{n}"
    target.mkdir(parents=True)
    note = [f"Moved here on {time.strftime('%Y-%m-%d %H:%M:%S')} when the run restarted from "
            f"{'scratch' if step is None else f'step {step}'}; these records will be written again.", ""]
    if plan.moved_lines:
        write_synced(target / "metrics.jsonl", "".join(line + "\n" for line, _ in plan.moved_lines))
        note += [f"metrics.jsonl: {why}: {line[:120]}" for line, why in plan.moved_lines]
        write_synced(run_dir / "metrics.jsonl.tmp", "".join(line + "\n" for line in plan.keep_lines))
        os.replace(run_dir / "metrics.jsonl.tmp", run_dir / "metrics.jsonl")
    for path, why in plan.moved_files:
        where_to = target / path.parent.name / path.name  # episodes/... or checkpoints/...
        where_to.parent.mkdir(exist_ok=True)
        os.replace(path, where_to)
        note.append(f"{path.parent.name}/{path.name}: {why}")
    write_synced(target / "NOTE.txt", "\n".join(note) + "\n")
    fsync_dir(run_dir)
    where = target.relative_to(run_dir)
    lines = []
    if plan.moved_lines:
        lines.append(f"moved {len(plan.moved_lines)} metrics line(s) to {where} ({plan.moved_lines[0][1]}, ...)")
    for path, why in plan.moved_files:
        lines.append(f"moved {path.parent.name}/{path.name} to {where}: {why}")
    return lines



def check_resumed_settings(run_dir: Path, config: TrainConfig, allow_changes: bool) -> dict[str, dict]:
    """A resumed run's settings against the folder's config.yaml: a change to the run's
    streams (seed, model, group size, ...) is refused unless allowed; returns every change."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return {}  # nothing recorded: any settings go on
    try:
        before = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{saved} cannot be read ({type(exc).__name__}); it records how the run was trained") from exc
    changes = changed_settings(before, config)
    stream = [k for k in changes if k in STREAM_SETTINGS]
    if stream and not allow_changes:
        k = stream[0]
        raise ConfigError(
            f"{run_dir} was trained with {k}={changes[k]['from']!r}, not {changes[k]['to']!r}"
            f"{' (and ' + ', '.join(stream[1:]) + ')' if stream[1:] else ''}: resuming with changed "
            f"{', '.join(stream)} breaks its streams; give another --out, or --allow-changes to go on (recorded)"
        )
    return changes
