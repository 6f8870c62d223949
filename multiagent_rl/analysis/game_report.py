"""The report's game sections: results (wins, draws, losses, ratings, the win-rate matrix,
exploitability), the learner's strategy before and after training, and each player's moves
early and late. Each appears only where its data exists, so a debate or a signalling run's
report has none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import page
from .game_plots import league_curves
from .league_metrics import latest_ratings, win_rate_matrix
from .tables import Table

if TYPE_CHECKING:
    from .report import RunAnalysis

Section = tuple[str, str, str]
STRATEGY_ROWS = 40  # Leduc poker has 936 information states; the files hold them all


def results_section(a: RunAnalysis) -> Section | None:
    """Wins / draws / losses per side, then the league's ratings, matrix and exploitability."""
    body = ""
    if a.results:
        body += ("<h3>Wins, draws and losses per model-played side</h3>"
                 '<p class="note">A game without a winner (cut off at the turn limit) is undecided; '
                 "decided = won, drawn or lost.</p>"
                 + page.table(a.results, max_rows=None))
    if a.ratings or a.exploitability:
        body += page.figure(league_curves(a.ratings or [], a.exploitability or []), "ratings and exploitability over training")
    if a.ratings:
        body += "<h3>Latest ratings</h3>" + page.table(latest_ratings(a.ratings), max_rows=None)
    if a.league:
        body += ("<h3>Win rate of the live policy, per training phase and opponent</h3>"
                 '<p class="note">A phase runs from one snapshot to the next. Each cell: wins / (wins + losses), '
                 "draws left out, and n = the games played (draws included).</p>"
                 + page.table(win_rate_matrix(a.league), max_rows=None))
    if not body:
        return None
    return ("results", "Results", page.section(
        "results", "Results", "Who wins: the model-played sides' outcomes, and the self-play league's ratings "
        "and head-to-head results where the run logged them.", body))


def strategy_section(a: RunAnalysis) -> Section | None:
    """The strategy tables of the first and the last evaluation side by side, and how decided
    each is (mean entropy per information state)."""
    if not a.strategy:
        return None
    steps = [row["step"] for row in a.strategy_entropy]
    shown = Table(a.strategy[:STRATEGY_ROWS], a.strategy.columns)
    left = len(a.strategy) - len(shown)
    more = (f'<p class="note">The first {len(shown)} of {len(a.strategy)} information states, sorted; '
            f"{left} left out. The full tables are in strategy/*.json.</p>") if left else ""
    when = f"step {steps[0]} and step {steps[-1]}" if len(steps) > 1 else f"step {steps[0]} (the only one written)"
    return ("strategy", "Strategy", page.section(
        "strategy", "Strategy before and after training",
        f"The learner's probability of each legal move at each information state (OpenSpiel's string for what "
        f"the player knows), read exactly by scoring each move at the evaluations of {when}. Entropy in bits: "
        "0 = always the same move; uniform play over the legal moves is the most there is.",
        "<h3>Mean entropy per information state</h3>" + page.table(a.strategy_entropy, max_rows=None)
        + "<h3>Each move's probability, per information state</h3>"
        + '<p class="note">–: the move is not legal there (or the state is not in that table).</p>'
        + page.table(shown, max_rows=None) + more))


def moves_section(a: RunAnalysis) -> Section | None:
    """Each player's most frequent moves and openings in the first and the last step."""
    if not a.moves:
        return None
    return ("moves", "Moves", page.section(
        "moves", "Moves early and late",
        "Each player's most frequent moves (share of its moves) and openings (its first move of each game), "
        "in the first and the last training step.",
        page.table(a.moves, max_rows=None)))


def game_sections(a: RunAnalysis) -> list[Section]:
    """The game sections that have data, results first."""
    return [s for s in (results_section(a), strategy_section(a), moves_section(a)) if s is not None]
