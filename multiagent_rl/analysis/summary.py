"""Headline numbers: team reward by step, and the per-run summary table that `analyse` prints
and puts at the top of the report (one column per run, so compared runs sit side by side)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..records import Episode
from .league_metrics import league_summary
from .tables import Table, format_value, mean

if TYPE_CHECKING:
    from .report import RunAnalysis

# metrics.jsonl keys a trainer may log, used when the episodes carry no step.
METRIC_KEYS = {"train": ("reward/team_mean", "reward/mean"), "eval": ("eval/team_reward_mean", "eval/reward_mean")}


def reward_by_step(episodes: Sequence[Episode], metrics: Sequence[dict[str, Any]] = ()) -> Table:
    """Mean team reward per (split, step): rows ``split``, ``step``, ``team_reward``,
    ``episodes``, ``source`` ("episodes" or "metrics"). A split with no stepped episodes falls
    back to the trainer's metrics.jsonl keys (``reward/team_mean``, ``eval/team_reward_mean``)."""
    grouped: dict[tuple[str, int], list[float]] = {}
    for e in episodes:
        if e.step is not None and e.split in ("train", "eval"):
            grouped.setdefault((e.split, e.step), []).append(e.team_reward())
    rows = [
        {"split": split, "step": step, "team_reward": sum(v) / len(v), "episodes": len(v), "source": "episodes"}
        for (split, step), v in sorted(grouped.items())
    ]
    for split, keys in METRIC_KEYS.items():
        if any(r["split"] == split for r in rows):
            continue
        for record in metrics:
            key = next((k for k in keys if isinstance(record.get(k), int | float)), None)
            if key is not None and isinstance(record.get("step"), int | float):
                rows.append({"split": split, "step": int(record["step"]), "team_reward": float(record[key]),
                             "episodes": None, "source": "metrics"})
    return Table(rows, ["split", "step", "team_reward", "episodes", "source"])


def term_means(episode: Episode) -> dict[str, float]:
    """Each named term's (unweighted) value in one episode, the mean over the agents that
    receive it: those with a ledger line of that term (a speaker-only term is the speaker's
    value, not halved by a listener who never gets it). A term without ledger lines (an older
    log) is averaged over the agents it names."""
    receivers: dict[str, set[str]] = {}
    for _, entry in episode.ledger():
        receivers.setdefault(entry.term, set()).add(entry.agent)
    out = {}
    for term, values in episode.reward_terms.items():
        chosen = [v for a, v in values.items() if a in receivers.get(term, values)]
        if chosen:
            out[term] = sum(chosen) / len(chosen)
    return out


def reward_terms_by_step(episodes: Sequence[Episode]) -> Table:
    """Mean of each named reward term (per episode over the agents that receive it, see
    `term_means`; then over training episodes) per step: rows ``step``, ``term``, ``value``,
    ``episodes``. Empty when the reward has no named terms."""
    grouped: dict[tuple[int, str], list[float]] = {}
    for e in episodes:
        if e.step is None or e.split != "train" or set(e.reward_terms) <= {"total"}:
            continue
        for term, value in term_means(e).items():
            grouped.setdefault((e.step, term), []).append(value)
    rows = [{"step": step, "term": term, "value": sum(v) / len(v), "episodes": len(v)} for (step, term), v in sorted(grouped.items())]
    return Table(rows, ["step", "term", "value", "episodes"])


def _pair(early: float | None, late: float | None) -> str:
    if early is None and late is None:
        return "–"
    return f"{format_value(early)} → {format_value(late)}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def run_summary(analysis: RunAnalysis) -> dict[str, str]:
    """Headline metric -> printable value for one run (early → late where it moves)."""
    a = analysis
    train = [e for e in a.run.episodes if e.split == "train"]
    evals = [r for r in a.rewards if r["split"] == "eval"]
    steps = sorted({e.step for e in a.run.episodes if e.step is not None})
    last_eval = max(evals, key=lambda r: r["step"]) if evals else None
    top_edge = max(a.adoption, key=lambda r: (r["adoption_rate"], r["opportunities"]), default=None)
    late_pairs = [p["js_distance"] for p in a.specialisation if p["js_distance"] is not None]
    drifts = [d["js_distance"] for d in a.drift if d["js_distance"] is not None]
    summary = {
        "scenario": a.run.scenario or "–",
        "episodes (train / eval)": f"{len(train)} / {sum(e.split == 'eval' for e in a.run.episodes)}",
        "steps": f"{steps[0]}–{steps[-1]} ({len(steps)})" if steps else "–",
        "train team reward, early → late": _pair(a.early["team_reward"], a.late["team_reward"]),
        "eval team reward (last eval)": f"{format_value(last_eval['team_reward'])} @ step {last_eval['step']}" if last_eval else "–",
    }
    if a.early["team_accuracy"] is not None or a.late["team_accuracy"] is not None:  # tasks with a reference answer
        summary["team answer correct, early → late"] = f"{_share(a.early['team_accuracy'])} → {_share(a.late['team_accuracy'])}"
    summary |= {
        "message length (chars), early → late": _pair(a.early["mean_chars"], a.late["mean_chars"]),
        "distinct-1, early → late": _pair(a.early["distinct_1"], a.late["distinct_1"]),
        "language drift (JS, mean over agents)": format_value(mean(drifts)),
        "specialisation (JS between agents, late)": format_value(mean(late_pairs)),
    }
    if a.debating:  # several agents answer in the last round: their agreement and flips mean something
        summary["last round unanimous (late)"] = _share(a.late["last_round_agreement"])
        summary["flips wrong→correct / correct→wrong per episode (late)"] = (
            f"{format_value(a.late['flips_wrong_to_correct'])} / {format_value(a.late['flips_correct_to_wrong'])}")
    summary["strongest adoption edge"] = (
        f"{top_edge['sender']}→{top_edge['receiver']} {_share(top_edge['adoption_rate'])}" if top_edge else "–")
    summary.update(game_outcomes(a.run.episodes))
    summary.update(league_summary(a.run.metrics))
    if a.ablation_summary:
        top = max(a.ablation_summary, key=lambda r: r["answer_change_rate"] or 0.0)
        summary["strongest causal edge (ablation)"] = f"{top['sender']}→{top['receiver']} {_share(top['answer_change_rate'])}"
    if a.run.notes:
        summary["log problems"] = "; ".join(a.run.notes)
    return summary


def game_outcomes(episodes: Sequence[Episode]) -> dict[str, str]:
    """For games (episodes with a winner): each model-played side's win / draw / loss rates
    over the decided games, and the invalid moves, at the first and the last held-out
    evaluation (a mean over all agents says nothing in a zero-sum game). With one
    model-played side it is "the model side"; in self-play each side has its line."""
    evals = [e for e in episodes if e.split == "eval" and e.step is not None and e.winner is not None]
    if not evals:
        return {}
    first, last = min(e.step for e in evals), max(e.step for e in evals)
    sides = list(dict.fromkeys(t for e in evals for t in sorted(e.model_teams())))

    def rates(step: int, side: str) -> str:
        chosen = [e for e in evals if e.step == step and side in e.model_teams()]
        if not chosen:
            return "–"
        won = sum(e.winner == side for e in chosen) / len(chosen)
        drawn = sum(e.winner == "draw" for e in chosen) / len(chosen)
        return f"{_share(won)} / {_share(drawn)} / {_share(1 - won - drawn)}"

    def invalid(step: int) -> str:
        moves = [t for e in evals if e.step == step for t in e.turns if not t.scripted]
        return _share(sum(not t.valid for t in moves) / len(moves) if moves else None)

    out = {}
    for side in sides:
        who = "the model side" if len(sides) == 1 else side
        out[f"games: win / draw / loss of {who}, eval step {first} → {last}"] = f"{rates(first, side)} → {rates(last, side)}"
    out[f"games: invalid moves, eval step {first} → {last}"] = f"{invalid(first)} → {invalid(last)}"
    return out


def unique_names(analyses: Sequence[RunAnalysis]) -> list[str]:
    """Run folder names, with " (2)", " (3)"... added where two runs share a name."""
    names: list[str] = []
    for a in analyses:
        name, k = a.run.name, 2
        while name in names:
            name, k = f"{a.run.name} ({k})", k + 1
        names.append(name)
    return names


def summary_table(analyses: Sequence[RunAnalysis]) -> Table:
    """Rows = headline metrics, one column per run (names made unique)."""
    names = unique_names(analyses)
    per_run = [run_summary(a) for a in analyses]
    metrics = list(dict.fromkeys(m for s in per_run for m in s))
    rows = [{"metric": m} | {n: s.get(m, "–") for n, s in zip(names, per_run, strict=True)} for m in metrics]
    return Table(rows, ["metric", *names])
