"""Reading what a run left behind: its episode logs, its optional metrics.jsonl and strategy
tables, and the ordering of episodes over training that the "early vs late" metrics use.

>>> run = load_run("runs/demo")                     # doctest: +SKIP
>>> len(run.episodes), run.metrics[-1]["step"]      # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..records import Episode, ReadResult, read_episodes, read_run_episodes

STRATEGY_FILE = re.compile(r"^step-(\d+)\.json$")  # strategy/step-NNNNNN.json, as the training loop names them


class RunError(ValueError):
    """A run folder that cannot be analysed; the message says what is missing."""


@dataclass
class RunLog:
    """One run's data: every readable episode, the per-step metrics, and what was skipped."""

    name: str
    path: Path
    episodes: list[Episode]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strategies: list[dict[str, Any]] = field(default_factory=list)  # `read_strategies`, by step

    @property
    def scenario(self) -> str | None:
        return self.episodes[0].scenario if self.episodes else None


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON objects of a metrics.jsonl file (one per line) and notes on unreadable lines.

    A missing file gives no metrics; a cut-off last line (a crash mid-write) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    metrics, notes = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                notes.append(f"{path.name} line {number} is not JSON (cut off?); skipped")
                continue
            if isinstance(record, dict):
                metrics.append(record)
            else:
                notes.append(f"{path.name} line {number} is a {type(record).__name__}, not an object")
    return metrics, notes


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0 + 1e-9  # rounding


def read_strategies(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The strategy tables of ``RUN/strategy/step-NNNNNN.json`` (an OpenSpiel game's league
    writes one at each evaluation: {"step", "exploitability", "policy": {information state:
    {move: probability}}}), by step, and notes on files that are not such a table."""
    folder = Path(path) / "strategy"
    found = sorted((int(m.group(1)), f) for f in folder.iterdir() if (m := STRATEGY_FILE.match(f.name))) if folder.is_dir() else []
    tables, notes = [], []
    for step, file in found:
        try:
            table = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            notes.append(f"strategy/{file.name} cannot be read ({type(exc).__name__}); skipped")
            continue
        policy = table.get("policy") if isinstance(table, dict) else None
        if not isinstance(policy, dict) or not all(
                isinstance(moves, dict) and all(_probability(p) for p in moves.values()) for moves in policy.values()):
            notes.append(f"strategy/{file.name} has no policy {{information state: {{move: probability}}}}; skipped")
            continue
        tables.append(table | {"step": step})
    return tables, notes


def load_run(path: str | Path, progress: bool = False) -> RunLog:
    """Every readable episode of ``RUN/episodes/*.msgpack`` plus ``RUN/metrics.jsonl`` and
    the strategy tables of ``RUN/strategy/`` (`read_strategies`).

    Raises RunError when the folder has neither episodes nor metrics.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {str(path)!r} does not exist")
    files = sorted(Path(path, "episodes").glob("*.msgpack"))
    if progress and len(files) > 1:
        # Same files and order as read_run_episodes, one at a time so the bar can move.
        result = ReadResult()
        for file in tqdm(files, desc=f"reading {path.name}", unit="file"):
            part = read_episodes(file)
            result.episodes.extend(part.episodes)
            result.skipped.extend(part.skipped)
    else:
        result = read_run_episodes(path)
    metrics, notes = read_metrics(path / "metrics.jsonl")
    strategies, strategy_notes = read_strategies(path)
    notes += strategy_notes
    if result.skipped:
        notes.insert(0, f"episode logs: {result.describe()}")
    if not result.episodes and not metrics:
        raise RunError(
            f"run folder {str(path)!r} has no episodes (episodes/*.msgpack) and no metrics.jsonl; "
            "is it the folder given to `train --out`?"
        )
    return RunLog(name=path.resolve().name, path=path, episodes=result.episodes, metrics=metrics, notes=notes,
                  strategies=strategies)


def training_episodes(episodes: Sequence[Episode]) -> list[Episode]:
    """Train-split episodes with a step, ordered by step (stable). Logs without any step
    (e.g. `play`) fall back to every episode in log order."""
    stepped = [e for e in episodes if e.split == "train" and e.step is not None]
    if not stepped:
        return list(episodes)
    return sorted(stepped, key=lambda e: e.step)


def training_phases(episodes: Sequence[Episode], parts: int = 3) -> tuple[list[Episode], list[Episode]]:
    """(early, late): the episodes of the first and last ``1/parts`` of the distinct training
    steps (of the log order when there are no steps). With one step both are everything."""
    ordered = training_episodes(episodes)
    if not ordered:
        return [], []
    if ordered[0].step is None:  # no steps: thirds of the log order
        k = max(1, len(ordered) // parts)
        return ordered[:k], ordered[-k:]
    steps = sorted({e.step for e in ordered})
    k = max(1, len(steps) // parts)
    early_steps, late_steps = set(steps[:k]), set(steps[-k:])
    return [e for e in ordered if e.step in early_steps], [e for e in ordered if e.step in late_steps]


def step_bins(steps: Sequence[int], bins: int) -> dict[int, int]:
    """Map each step to a representative step, at most `bins` of them (equal-width ranges
    labelled by their first step); each step is its own bin when there are few."""
    distinct = sorted(set(steps))
    if len(distinct) <= bins:
        return {s: s for s in distinct}
    lo, hi = distinct[0], distinct[-1]
    width = (hi - lo + 1) / bins
    labels = {}
    for s in distinct:
        index = min(bins - 1, math.floor((s - lo) / width))
        labels[s] = index
    firsts: dict[int, int] = {}
    for s in distinct:
        firsts.setdefault(labels[s], s)
    return {s: firsts[labels[s]] for s in distinct}
