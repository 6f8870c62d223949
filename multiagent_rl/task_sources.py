"""Tasks from data: a list of `Task`s, a JSONL, CSV or Parquet file, or any iterable of rows
(a `datasets.Dataset` iterates dicts, so it works without `datasets` being a dependency).

>>> table = tasks_from("examples/word_problems.jsonl", split="split")   # doctest: +SKIP
>>> Scenario(..., make_task=table, ...)                                  # doctest: +SKIP

A `TaskTable` is a `make_task` (rng -> Task). The held-out split comes from the data's own
split column when it has one (`train`; `eval`, `test`, `validation` and `heldout` are held
out), else from the stable hash of the task key, as for generated tasks. Bad data stops
with one line naming the file, the row and the column.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .records import Task

HELD_OUT = {"eval", "test", "validation", "valid", "heldout", "held_out"}
TRAIN = {"train", "training"}


class TaskDataError(ValueError):
    """Task data that cannot be used; the message names the file, row and column."""


class TaskTable:
    """Tasks read once from data, each with its split if the data says it."""

    def __init__(self, tasks: list[Task], splits: list[str | None], source: str):
        if not tasks:
            raise TaskDataError(f"{source}: no tasks (the data is empty)")
        self.tasks = tasks
        self.source = source
        self._split = {t.key: s for t, s in zip(tasks, splits, strict=True)}
        self.has_splits = any(s is not None for s in splits)

    def __call__(self, rng: random.Random) -> Task:
        """A uniformly drawn task (the `make_task` contract)."""
        return self.tasks[rng.randrange(len(self.tasks))]

    def __len__(self) -> int:
        return len(self.tasks)

    def split_of(self, task: Task) -> str | None:
        """The data's split for this task ('train' | 'eval'), or None to use the key hash."""
        return self._split.get(task.key)

    def __repr__(self) -> str:
        return f"TaskTable({self.source!r}, {len(self.tasks)} tasks)"


def tasks_from(
    source: str | Path | Iterable[Any],
    *,
    prompt: str = "prompt",
    answer: str | None = "answer",
    key: str | None = None,
    private: Mapping[str, str] | str | None = None,
    split: str | None = None,
    meta: Iterable[str] = (),
) -> TaskTable:
    """A TaskTable from `source`, with a column mapping.

    prompt / answer: column names (answer None: tasks without a reference answer).
    key: column with a stable id (default: the row's `id` column if it has one, else its
    prompt; either way a task keeps its split across runs).
    private: {agent: column} of private views, or one column holding an {agent: text} mapping.
    split: column naming each row's split. meta: columns copied into `Task.meta`.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        rows, name = _read_file(path), str(path)
    else:
        rows, name = source, type(source).__name__
    tasks, splits = [], []
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        if isinstance(row, Task):
            tasks.append(row)
            splits.append(None)
            continue
        if not isinstance(row, Mapping):
            raise TaskDataError(f"{name}: row {number} is a {type(row).__name__}, not a mapping of columns")
        task, row_split = _task(row, number, name, prompt, answer, key, private, split, tuple(meta))
        if task.key in seen:
            raise TaskDataError(f"{name}: row {number}: key {task.key!r} repeats an earlier row; keys must be unique")
        seen.add(task.key)
        tasks.append(task)
        splits.append(row_split)
    return TaskTable(tasks, splits, name)


def _task(row: Mapping, number: int, name: str, prompt: str, answer: str | None, key: str | None,
          private: Mapping[str, str] | str | None, split: str | None, meta: tuple[str, ...]) -> tuple[Task, str | None]:
    def column(col: str) -> Any:
        if col not in row:
            raise TaskDataError(f"{name}: row {number}: no column {col!r} (columns: {', '.join(map(str, row)) or 'none'})")
        return row[col]

    text = column(prompt)
    if not isinstance(text, str) or not text.strip():
        raise TaskDataError(f"{name}: row {number}, column {prompt!r}: the prompt must be non-empty text, got {text!r}")
    views: dict[str, Any] = {}
    if isinstance(private, str):
        views = column(private) or {}
        if isinstance(views, str):  # a JSON object in a CSV cell
            try:
                views = json.loads(views)
            except json.JSONDecodeError:
                views = None
        if not isinstance(views, Mapping):
            raise TaskDataError(f"{name}: row {number}, column {private!r}: expected an {{agent: text}} mapping")
    elif private:
        views = {agent: column(col) for agent, col in private.items()}
    reference = column(answer) if answer is not None else None
    fields = {
        "key": str(column(key)) if key is not None else str(row["id"]) if "id" in row else text,
        "prompt": text,
        "answer": None if reference is None else str(reference),
        "private": {str(a): str(v) for a, v in views.items()},
        "meta": {m: column(m) for m in meta},
    }
    try:
        task = Task(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TaskDataError(f"{name}: row {number}, field {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    row_split = None
    if split is not None:
        value = str(column(split)).strip().lower()
        if value in HELD_OUT:
            row_split = "eval"
        elif value in TRAIN:
            row_split = "train"
        else:
            raise TaskDataError(
                f"{name}: row {number}, column {split!r}: unknown split {value!r}; use train or eval (test, validation)"
            )
    return task, row_split


def _read_file(path: Path) -> list[Mapping[str, Any]]:
    if not path.is_file():
        raise TaskDataError(f"task file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TaskDataError(f"{path}: row {number} is not JSON ({exc.msg} at column {exc.colno})") from exc
        return rows
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise TaskDataError(f"{path}: reading Parquet needs pyarrow: pip install 'multiagent-rl[data]'") from exc
        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises its own error types for damaged files
            raise TaskDataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from exc
    raise TaskDataError(f"task file {str(path)!r}: unknown format {suffix!r}; use .jsonl, .csv, .tsv or .parquet")
