"""The league's figures (ratings, exploitability), kept apart from `plots` so each stays one
job; drawn the same way, as base64 PNG strings."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.ticker import MaxNLocator

from .plots import INK, PALETTE, _axes, _figure, styled, to_png


@styled
def league_curves(ratings: Sequence[dict], exploitability: Sequence[dict] = ()) -> str:
    """Ratings over training, one line per name with "live" bold; beside it exploitability on
    eval lines when there is any. `ratings`: step, name, rating; `exploitability`: step,
    exploitability."""
    panels = [p for p in (ratings, exploitability) if p]
    fig = _figure(11 if len(panels) > 1 else 9, 3.6)
    column = 1
    if ratings:
        ax = _axes(fig, 1, len(panels), column)
        column += 1
        names = list(dict.fromkeys(r["name"] for r in ratings))
        for i, name in enumerate(n for n in names if n != "live"):
            points = sorted((r["step"], r["rating"]) for r in ratings if r["name"] == name)
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color=PALETTE[i % len(PALETTE)], linewidth=1.3, alpha=0.85, label=name)
        live = sorted((r["step"], r["rating"]) for r in ratings if r["name"] == "live")
        if live:
            steps, values = zip(*live, strict=True)
            ax.plot(steps, values, color=INK, linewidth=3, label="live", zorder=5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("Ratings over training")
        ax.set_xlabel("training step")
        ax.set_ylabel("rating (mu − 3 sigma)")
        ax.legend(fontsize=8, loc="best", ncols=1 + len(names) // 9)
    if exploitability:
        ax = _axes(fig, 1, len(panels), column)
        points = sorted((r["step"], r["exploitability"]) for r in exploitability)
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, color=PALETTE[1], linewidth=2, marker="o", markersize=4)
        ax.set_ylim(bottom=min(0.0, *values))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("Exploitability (held-out)")
        ax.set_xlabel("training step")
        ax.set_ylabel("exploitability")
    return to_png(fig)
