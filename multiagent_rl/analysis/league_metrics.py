"""A self-play league as the training loop logs it in metrics.jsonl: ratings per step, the
live policy's games against each opponent, and exploitability on eval lines. The episodes
do not say who played a frozen snapshot, so these numbers come from the metrics alone.

Keys read (one JSON object per line, with "step"):

- ``league/rating/<name>``: the rating of "live" or of a snapshot ("step-20");
- ``league/vs/<opponent>/win|draw|loss``: the live policy's games against `opponent` in that
  step (a snapshot name, or "base": the untrained model);
- ``eval/exploitability``: on eval lines, where the game allows computing it.

>>> win_rate_matrix(league_results(run.metrics))   # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .tables import Table, format_value

RATING = "league/rating/"
VERSUS = "league/vs/"
EXPLOITABILITY = "eval/exploitability"
LIVE = "live"
BASE = "base"
OUTCOMES = ("win", "draw", "loss")
RESULT_COLUMNS = ["phase_start", "phase_end", "opponent", "wins", "draws", "losses", "games", "win_rate"]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _stepped(metrics: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(int(m["step"]), m) for m in metrics if _number(m.get("step"))]


def snapshot_step(name: str) -> int | None:
    """The step a snapshot was frozen at, from its name ("step-20" -> 20); None for others."""
    found = re.fullmatch(r"step-(\d+)", name)
    return int(found.group(1)) if found else None


def _name_order(names: set[str]) -> list[str]:
    """live, then snapshots by step, then base, then anything else by name."""
    def key(name: str) -> tuple:
        step = snapshot_step(name)
        return (0, 0, "") if name == LIVE else (1, step, "") if step is not None else (2 if name == BASE else 3, 0, name)
    return sorted(names, key=key)


def ratings_by_step(metrics: Sequence[dict[str, Any]]) -> Table:
    """Every logged rating: rows ``step``, ``name``, ``rating``."""
    rows = [{"step": step, "name": key[len(RATING):], "rating": float(value)}
            for step, m in _stepped(metrics) for key, value in m.items()
            if key.startswith(RATING) and _number(value)]
    order = _name_order({r["name"] for r in rows})
    rows.sort(key=lambda r: (order.index(r["name"]), r["step"]))
    return Table(rows, ["step", "name", "rating"])


def latest_ratings(ratings: Sequence[dict]) -> Table:
    """Each name's last logged rating and the step it was logged at, best first."""
    last: dict[str, dict] = {}
    for r in ratings:
        if r["name"] not in last or r["step"] >= last[r["name"]]["step"]:
            last[r["name"]] = r
    rows = sorted(last.values(), key=lambda r: -r["rating"])
    return Table(({"name": r["name"], "rating": r["rating"], "at_step": r["step"]} for r in rows), ["name", "rating", "at_step"])


def exploitability_by_step(metrics: Sequence[dict[str, Any]]) -> Table:
    """``eval/exploitability`` per eval line: rows ``step``, ``exploitability``."""
    rows = [{"step": step, "exploitability": float(m[EXPLOITABILITY])}
            for step, m in _stepped(metrics) if _number(m.get(EXPLOITABILITY))]
    return Table(sorted(rows, key=lambda r: r["step"]), ["step", "exploitability"])


def _versus(key: str) -> tuple[str, str] | None:
    if not key.startswith(VERSUS):
        return None
    opponent, _, outcome = key[len(VERSUS):].rpartition("/")
    return (opponent, outcome) if opponent and outcome in OUTCOMES else None


def league_results(metrics: Sequence[dict[str, Any]]) -> Table:
    """The live policy's games per training phase and opponent. A phase runs from one snapshot
    to the next (labelled by the step that starts it: a snapshot's, or the first logged step
    when games come before the first snapshot). Rows ``phase_start``, ``phase_end``,
    ``opponent``, ``wins``, ``draws``, ``losses``, ``games`` and ``win_rate`` = wins / (wins +
    losses), draws left out as in the league's own win-rate interval (None without such games)."""
    counts: dict[tuple[int, str], dict[str, float]] = {}
    names: set[str] = set()
    steps: list[int] = []
    for step, m in _stepped(metrics):
        steps.append(step)
        for key, value in m.items():
            if key.startswith(RATING):
                names.add(key[len(RATING):])
            found = _versus(key)
            if found and _number(value):
                names.add(found[0])
                tally = counts.setdefault((step, found[0]), dict.fromkeys(OUTCOMES, 0.0))
                tally[found[1]] += float(value)
    if not counts:
        return Table([], RESULT_COLUMNS)
    played = [s for s, _ in counts]
    starts = sorted({s for n in names if (s := snapshot_step(n)) is not None})
    if not starts or min(played) < starts[0]:
        starts.insert(0, min(played))
    last = max(steps)
    grouped: dict[tuple[int, str], dict[str, float]] = {}
    for (step, opponent), tally in counts.items():
        start = max(s for s in starts if s <= step)
        total = grouped.setdefault((start, opponent), dict.fromkeys(OUTCOMES, 0.0))
        for outcome in OUTCOMES:
            total[outcome] += tally[outcome]
    order = _name_order({o for _, o in grouped})
    rows = []
    for (start, opponent), t in sorted(grouped.items(), key=lambda item: (item[0][0], order.index(item[0][1]))):
        later = [s for s in starts if s > start]
        decided = t["win"] + t["loss"]
        rows.append({
            "phase_start": start, "phase_end": later[0] - 1 if later else last, "opponent": opponent,
            "wins": int(t["win"]), "draws": int(t["draw"]), "losses": int(t["loss"]),
            "games": int(t["win"] + t["draw"] + t["loss"]), "win_rate": t["win"] / decided if decided else None,
        })
    return Table(rows, RESULT_COLUMNS)


def _cell(row: dict | None) -> str:
    if row is None or not row["games"]:
        return "–"
    rate = "–" if row["win_rate"] is None else f"{100 * row['win_rate']:.0f}%"
    return f"{rate} (n={row['games']})"


def win_rate_matrix(results: Sequence[dict]) -> Table:
    """`league_results` as a matrix: one row per phase ("steps 20–39"), one column per
    opponent that played at all, each cell "win rate (n=games)"."""
    opponents = _name_order({r["opponent"] for r in results if r["games"]})
    phases = list(dict.fromkeys((r["phase_start"], r["phase_end"]) for r in results))
    index = {(r["phase_start"], r["opponent"]): r for r in results}
    rows = [{"phase": f"steps {start}–{end}" if end != start else f"step {start}"}
            | {o: _cell(index.get((start, o))) for o in opponents} for start, end in phases]
    return Table(rows, ["phase", *opponents])


def league_summary(metrics: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Headline lines for the summary table: the live rating and exploitability, first → last."""
    out = {}
    live = [r for r in ratings_by_step(metrics) if r["name"] == LIVE]
    if live:
        out["league: live rating, first → last"] = (
            f"{format_value(live[0]['rating'])} → {format_value(live[-1]['rating'])} (step {live[0]['step']} → {live[-1]['step']})")
    exploit = exploitability_by_step(metrics)
    if exploit:
        first, last = exploit[0], exploit[-1]
        out["exploitability (eval), first → last"] = (
            f"{format_value(first['exploitability'])} → {format_value(last['exploitability'])} (step {first['step']} → {last['step']})")
    return out
