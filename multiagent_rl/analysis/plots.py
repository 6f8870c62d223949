"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no display, no global
backend switch) and returned as base64 PNG strings ready for an ``<img src="data:...">``."""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib
import networkx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]
NODE_SIZE = 2600
INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.edgecolor": "#9ca3af", "axes.labelcolor": INK, "xtick.color": MUTED, "ytick.color": MUTED,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
}


def styled(draw: Callable[..., str]) -> Callable[..., str]:
    """Draw under the report's rc style without touching the caller's global settings."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> str:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _axes(fig: Figure, *args, **kwargs):
    ax = fig.add_subplot(*args, **kwargs)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    return ax


def to_png(fig: Figure) -> str:
    """The figure as base64 PNG (no metadata, so no URL hides inside the image either)."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata={"Software": None}, facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if window <= 1 or len(x) < 3:
        return x
    kernel = np.ones(window)
    valid = np.convolve(np.ones_like(x), kernel, mode="same")  # edge-corrected moving mean
    return np.convolve(x, kernel, mode="same") / valid


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


@styled
def reward_curves(curves: Mapping[str, Sequence[dict]]) -> str:
    """Team reward by step: train solid (smoothed when long), eval dashed with markers, one
    colour per run. `curves`: run name -> rows with step, split, team_reward."""
    fig = _figure(9, 3.6)
    ax = _axes(fig, 1, 1, 1)
    drawn = False
    for i, (run, rows) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        for split in ("train", "eval"):
            points = sorted((r["step"], r["team_reward"]) for r in rows if r["split"] == split and r["team_reward"] is not None)
            if not points:
                continue
            drawn = True
            steps, values = zip(*points, strict=True)
            label = f"{run} · {split}" if len(curves) > 1 else split
            if split == "train":
                window = max(1, len(points) // 25)
                if window > 1:
                    ax.plot(steps, values, color=colour, alpha=0.2, linewidth=1)
                ax.plot(steps, _smooth(values, window), color=colour, linewidth=2.2, label=label)
            else:
                ax.plot(steps, values, color=colour, linestyle="--", marker="o", markersize=4, linewidth=1.6, label=label)
    if not drawn:
        _empty(ax, "no rewards with a training step in this log")
    else:
        ax.set_xlabel("training step")
        ax.set_ylabel("team reward (mean)")
        ax.legend(loc="best", fontsize=9)
    ax.set_title("Team reward over training")
    return to_png(fig)


@styled
def accuracy_against_tokens(panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float, float]]]]) -> str:
    """Held-out accuracy against training tokens, one panel per task, one line per side (a
    team, its lone agent) with its 95% interval as a band. `panels`: task -> label ->
    (tokens, accuracy, low, high) points."""
    fig = _figure(4.2 * max(1, len(panels)), 3.4)
    for p, (task, lines) in enumerate(panels.items(), start=1):
        ax = _axes(fig, 1, max(1, len(panels)), p)
        for i, (label, points) in enumerate(lines.items()):
            if not points:
                continue
            tokens, accuracy, low, high = zip(*sorted(points), strict=True)
            colour = PALETTE[i % len(PALETTE)]
            ax.fill_between(tokens, low, high, color=colour, alpha=0.15, linewidth=0)
            ax.plot(tokens, accuracy, color=colour, marker="o", markersize=4, linewidth=1.8, label=label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training tokens generated")
        ax.set_ylabel("held-out accuracy" if p == 1 else "")
        ax.set_title(task)
        ax.legend(loc="best", fontsize=8)
    return to_png(fig)


@styled
def reward_terms(rows: Sequence[dict]) -> str:
    """Each named reward term (unweighted, mean over the agents that receive it) by training
    step, one line each.
    `rows`: step, term, value."""
    fig = _figure(9, 3.2)
    ax = _axes(fig, 1, 1, 1)
    terms = sorted({r["term"] for r in rows})
    for i, term in enumerate(terms):
        points = sorted((r["step"], r["value"]) for r in rows if r["term"] == term)
        steps, values = zip(*points, strict=True)
        window = max(1, len(points) // 25)
        ax.plot(steps, _smooth(values, window), color=PALETTE[i % len(PALETTE)], linewidth=2, label=term)
    if not terms:
        _empty(ax, "the reward has no named terms")
    else:
        ax.set_xlabel("training step")
        ax.set_ylabel("term value (mean over receivers)")
        ax.legend(loc="best", fontsize=9)
    ax.set_title("Reward terms over training")
    return to_png(fig)


@styled
def message_trends(rows: Sequence[dict], agents: Sequence[str]) -> str:
    """Three panels over training steps, one line per agent: mean message length (chars),
    distinct-1 and unigram entropy."""
    fig = _figure(11, 3.4)
    panels = [("mean_chars", "mean message length (chars)"), ("distinct_1", "distinct-1"), ("entropy_bits", "word entropy (bits)")]
    for k, (column, title) in enumerate(panels):
        ax = _axes(fig, 1, 3, k + 1)
        ax.set_title(title)
        if not rows:
            _empty(ax, "no training steps")
            continue
        for i, agent in enumerate(agents):
            points = [(r["step"], r[column]) for r in rows if r["agent"] == agent and r[column] is not None]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, color=PALETTE[i % len(PALETTE)], linewidth=2, marker="o", markersize=3, label=agent)
        ax.set_xlabel("training step")
        if k == 0:
            ax.legend(fontsize=8, loc="best")
    return to_png(fig)


@styled
def signalling_trends(rows: Sequence[dict], agents: Sequence[str]) -> str:
    """Two panels over training steps, one line per agent: topographic similarity, and
    meaning-message information normalised by H(meaning) (adjusted for chance solid,
    plug-in dashed).
    Rows with split "eval" (held-out evaluations; step 0 = untrained) are drawn as big
    open markers."""
    fig = _figure(11, 3.4)
    panels = [("topographic similarity", ["topographic_similarity"]),
              ("I(meaning; message) / H(meaning)", ["adjusted_normalised_mi", "normalised_mi"])]
    train = [r for r in rows if r.get("split", "train") == "train"]
    held_out = [r for r in rows if r.get("split") == "eval"]
    for k, (title, columns) in enumerate(panels):
        ax = _axes(fig, 1, 2, k + 1)
        ax.set_title(title)
        if not rows:
            _empty(ax, "no training steps")
            continue
        for i, agent in enumerate(agents):
            colour = PALETTE[i % len(PALETTE)]
            for column in columns:
                plug_in = column == "normalised_mi"
                points = [(r["step"], r[column]) for r in train if r["agent"] == agent and r.get(column) is not None]
                if points:
                    steps, values = zip(*points, strict=True)
                    ax.plot(steps, values, color=colour, linewidth=1.2 if plug_in else 2, linestyle="--" if plug_in else "-",
                            alpha=0.6 if plug_in else 1.0, label=f"{agent} (plug-in)" if plug_in else agent)
                if plug_in:
                    continue
                points = [(r["step"], r[column]) for r in held_out if r["agent"] == agent and r.get(column) is not None]
                if points:
                    steps, values = zip(*points, strict=True)
                    ax.plot(steps, values, color=colour, linestyle="none", marker="o", markersize=8, markerfacecolor="white",
                            markeredgewidth=2, label=f"{agent} · held-out")
        ax.axhline(0, color=GRID, linewidth=1)
        ax.set_xlabel("training step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        else:  # e.g. one message for every meaning: rho and the adjusted MI are undefined
            ax.text(0.5, 0.5, "undefined at every step", ha="center", va="center", color=MUTED, transform=ax.transAxes)
    return to_png(fig)


def _layout(graph: networkx.DiGraph) -> dict:
    nodes = list(graph.nodes)
    if len(nodes) <= 10:
        # A circle starting at the top reads like a seating plan and never overlaps.
        return {n: (math.cos(math.pi / 2 - 2 * math.pi * i / len(nodes)), math.sin(math.pi / 2 - 2 * math.pi * i / len(nodes))) for i, n in enumerate(nodes)}
    return networkx.spring_layout(graph, seed=0)


@styled
def draw_weighted_graph(graph: networkx.DiGraph, title: str, label_format: str, colour: str, caption: str = "") -> str:
    """Agents on a circle, edges as curved arrows with width proportional to ``weight`` and
    labelled with ``label_format.format(weight)``."""
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=11, fontweight="bold", color=INK)
    ax.axis("off")
    if graph.number_of_nodes() == 0:
        _empty(ax, "nothing to draw")
        return to_png(fig)
    pos = _layout(graph)
    weights = [d.get("weight", 0.0) for _, _, d in graph.edges(data=True)]
    top = max(weights, default=0.0) or 1.0
    networkx.draw_networkx_nodes(graph, pos, ax=ax, node_size=NODE_SIZE, node_color="#eef2ff", edgecolors=INK, linewidths=1.2)
    networkx.draw_networkx_labels(graph, pos, ax=ax, font_size=9, font_color=INK)
    if graph.number_of_edges():
        widths = [0.6 + 6.0 * w / top for w in weights]
        networkx.draw_networkx_edges(
            graph, pos, ax=ax, width=widths, edge_color=colour, alpha=0.75, arrows=True, arrowsize=16,
            arrowstyle="-|>", node_size=NODE_SIZE, connectionstyle="arc3,rad=0.15",
        )
        labels = {(u, v): label_format.format(d.get("weight", 0.0)) for u, v, d in graph.edges(data=True)}
        networkx.draw_networkx_edge_labels(
            graph, pos, edge_labels=labels, ax=ax, font_size=8, label_pos=0.3, connectionstyle="arc3,rad=0.15",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    if caption:
        ax.text(0.5, -0.04, caption, ha="center", va="top", fontsize=8, color=MUTED, transform=ax.transAxes)
    ax.margins(0.18)
    return to_png(fig)


@styled
def debate_panels(rounds: Sequence[dict], by_step: Sequence[dict]) -> str:
    """Left: per round, share of answers changed, accuracy and unanimity. Right: over training,
    team accuracy, last-round agreement and flips per episode."""
    fig = _figure(11, 3.6)
    left = _axes(fig, 1, 2, 1)
    left.set_title("By round")
    if rounds:
        x = np.arange(len(rounds))
        series = [("change_rate", "answers changed"), ("accuracy", "answers correct"), ("unanimous_rate", "unanimous")]
        for i, (column, label) in enumerate(series):
            values = [r[column] if r[column] is not None else 0.0 for r in rounds]
            left.bar(x + (i - 1) * 0.26, values, width=0.26, color=PALETTE[i], label=label)
        left.set_xticks(x, [f"round {r['round']}" for r in rounds])
        left.set_ylim(0, 1.05)
        left.set_ylabel("share")
        left.legend(fontsize=8, loc="upper left", ncols=3)
    else:
        _empty(left, "no turns")
    right = _axes(fig, 1, 2, 2)
    right.set_title("Over training")
    if by_step:
        steps = [r["step"] for r in by_step]
        lines = [("team_accuracy", "team correct", 0), ("last_round_agreement", "last round unanimous", 2),
                 ("flips_wrong_to_correct", "flips wrong→correct / episode", 3), ("flips_correct_to_wrong", "flips correct→wrong / episode", 4)]
        for column, label, colour in lines:
            values = [r[column] for r in by_step]
            if any(v is not None for v in values):
                right.plot(steps, [np.nan if v is None else v for v in values], color=PALETTE[colour], linewidth=2, marker="o", markersize=3, label=label)
        right.set_xlabel("training step")
        right.legend(fontsize=8, loc="best")
    else:
        _empty(right, "no training steps")
    return to_png(fig)


@styled
def specialisation_panels(agents: Sequence[str], pairs: Sequence[dict], drift: Sequence[dict]) -> str:
    """Left: heatmap of pairwise JS distance between agents' words. Right: each agent's drift
    (JS distance early vs late training)."""
    fig = _figure(10, 3.8)
    left = fig.add_subplot(1, 2, 1)
    left.set_title("Between agents (JS distance)", fontsize=11, fontweight="bold", color=INK)
    n = len(agents)
    if n >= 2:
        index = {a: i for i, a in enumerate(agents)}
        matrix = np.zeros((n, n))
        for p in pairs:
            if p["agent_a"] in index and p["agent_b"] in index and p["js_distance"] is not None:
                i, j = index[p["agent_a"]], index[p["agent_b"]]
                matrix[i, j] = matrix[j, i] = p["js_distance"]
        image = left.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        left.set_xticks(range(n), agents, rotation=30, ha="right", fontsize=8)
        left.set_yticks(range(n), agents, fontsize=8)
        for i in range(n):
            for j in range(n):
                left.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if matrix[i, j] < 0.6 else INK)
        fig.colorbar(image, ax=left, fraction=0.046, pad=0.04)
    else:
        _empty(left, "one agent only")
    right = _axes(fig, 1, 2, 2)
    right.set_title("Early vs late training (JS distance)")
    values = [(d["agent"], d["js_distance"]) for d in drift if d["js_distance"] is not None]
    if values:
        names, distances = zip(*values, strict=True)
        right.barh(range(len(names)), distances, color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])
        right.set_yticks(range(len(names)), names, fontsize=8)
        right.set_xlim(0, 1)
        right.invert_yaxis()
        right.set_xlabel("0 = same words, 1 = none shared")
    else:
        _empty(right, "no early/late split")
    return to_png(fig)
