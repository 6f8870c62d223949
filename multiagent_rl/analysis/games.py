"""Games: who won, and what each player played early and late in training.

A game's episodes are engine-driven: the engine names a winner (a team, "draw", or None for
a game cut off undecided) and reports each move as an event ``{"agent", "move"[, "name"]}``.
A mean reward says little there (zero-sum: it is 0 whoever wins), so a game's report leads
with wins, draws and losses per side.

>>> game_results(run.episodes)      # doctest: +SKIP
>>> moves_by_phase(run.episodes)    # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..records import Episode, Turn
from .loading import training_episodes, training_phases
from .tables import Table

RESULT_COLUMNS = ["phase", "side", "games", "wins", "draws", "losses", "undecided", "win_share", "decided_share"]
MOVE_COLUMNS = ["player", "scripted", "phase", "step", "episodes", "moves", "distinct", "most_frequent", "opening"]
INVALID = "(invalid)"


def engine_driven(episode: Episode) -> bool:
    """An engine played this episode: it names a winner, or its events hold moves."""
    return episode.winner is not None or any("move" in event for event in episode.events)


def game_episodes(episodes: Sequence[Episode]) -> list[Episode]:
    return [e for e in episodes if engine_driven(e)]


def _steps(episodes: Sequence[Episode]) -> str:
    steps = sorted({e.step for e in episodes if e.step is not None})
    if not steps:
        return ""
    return f" (step {steps[0]})" if len(steps) == 1 else f" (steps {steps[0]}–{steps[-1]})"


def _phases(episodes: Sequence[Episode]) -> list[tuple[str, list[Episode]]]:
    """Early and late training, then the first and the last held-out evaluation."""
    trained = [e for e in episodes if e.split != "eval"]
    early, late = training_phases(trained)
    if [id(e) for e in early] == [id(e) for e in late]:  # one step (or a short log): one phase
        phases = [(f"training{_steps(early)}", early)] if early else []
    else:
        phases = [(f"early{_steps(early)}", early), (f"late{_steps(late)}", late)]
    evals = [e for e in episodes if e.split == "eval"]
    stepped = sorted({e.step for e in evals if e.step is not None})
    for step in dict.fromkeys([stepped[0], stepped[-1]] if stepped else []):
        phases.append((f"eval (step {step})", [e for e in evals if e.step == step]))
    unstepped = [e for e in evals if e.step is None]
    if unstepped:
        phases.append(("eval", unstepped))
    return phases


def side_results(episodes: Sequence[Episode], phase: str = "") -> list[dict]:
    """One row per model-played side (team): its games, wins, draws, losses and undecided
    games (winner None: cut off), the share won and the share decided (a winner or a draw)."""
    sides = list(dict.fromkeys(t for e in episodes for t in sorted(e.model_teams())))
    rows = []
    for side in sides:
        mine = [e for e in episodes if side in e.model_teams()]
        wins = sum(e.winner == side for e in mine)
        draws = sum(e.winner == "draw" for e in mine)
        undecided = sum(e.winner is None for e in mine)
        rows.append({
            "phase": phase, "side": side, "games": len(mine), "wins": wins, "draws": draws,
            "losses": len(mine) - wins - draws - undecided, "undecided": undecided,
            "win_share": wins / len(mine), "decided_share": (len(mine) - undecided) / len(mine),
        })
    return rows


def game_results(episodes: Sequence[Episode]) -> Table:
    """Wins, draws and losses of each model-played side, early and late in training and at the
    first and last held-out evaluation (`side_results` per phase). Empty for a log without games."""
    games = game_episodes(episodes)
    return Table([row for phase, part in _phases(games) for row in side_results(part, phase)], RESULT_COLUMNS)


def _turn_move(turn: Turn) -> str:
    if not turn.valid:
        return INVALID
    if turn.message.answer is not None:
        return turn.message.answer
    line = turn.message.text.strip().splitlines()[0] if turn.message.text.strip() else "(empty)"
    return line if len(line) <= 40 else line[:39] + "…"


def episode_moves(episode: Episode) -> list[tuple[str, str]]:
    """(agent, move) in play order: the engine's move events (by name where it gives one), an
    invalid reply as "(invalid)"; an episode without move events falls back to its turns
    (each one's parsed answer, else the first line of its text)."""
    moves = []
    for event in episode.events:
        if "agent" not in event:
            continue
        if "move" in event:
            moves.append((str(event["agent"]), str(event.get("name") or event["move"])))
        elif "invalid" in event:
            moves.append((str(event["agent"]), INVALID))
    if moves:
        return moves
    return [(t.agent, _turn_move(t)) for t in episode.turns]


def first_and_last_step(episodes: Sequence[Episode]) -> tuple[list[Episode], list[Episode]]:
    """The training episodes of the first and the last step (without steps: the first and
    last third of the log)."""
    ordered = training_episodes(episodes)
    if not ordered or ordered[0].step is None:
        return training_phases(ordered)
    first, last = ordered[0].step, ordered[-1].step
    return [e for e in ordered if e.step == first], [e for e in ordered if e.step == last]


def _top(counts: Counter, total: int, n: int) -> str:
    shown = [f"{move} {100 * k / total:.0f}%" for move, k in counts.most_common(n)]
    return " · ".join(shown) + (" · …" if len(counts) > n else "")


def moves_by_phase(episodes: Sequence[Episode], top: int = 4) -> Table:
    """Each player's most frequent moves (with their share of its moves) and openings (its
    first move of each episode) in the first and the last training step: one row per player
    and phase, early above late."""
    early, late = first_and_last_step(episodes)
    rows = []
    for phase, part in (("early", early), ("late", late)):
        per_player: dict[str, Counter] = {}
        openings: dict[str, Counter] = {}
        played: Counter = Counter()  # episodes each player moved in
        scripted: set[str] = set()
        for e in part:
            seen: set[str] = set()
            scripted.update(e.scripted)
            for agent, move in episode_moves(e):
                per_player.setdefault(agent, Counter())[move] += 1
                if agent not in seen:  # its first move of the episode
                    seen.add(agent)
                    openings.setdefault(agent, Counter())[move] += 1
            played.update(seen)
        steps = sorted({e.step for e in part if e.step is not None})
        for agent, counts in per_player.items():
            total = sum(counts.values())
            rows.append({
                "player": agent, "scripted": agent in scripted, "phase": phase,
                "step": (steps[0] if len(steps) == 1 else f"{steps[0]}–{steps[-1]}") if steps else None,
                "episodes": played[agent],
                "moves": total, "distinct": len(counts), "most_frequent": _top(counts, total, top),
                "opening": _top(openings[agent], sum(openings[agent].values()), top),
            })
    order = list(dict.fromkeys(r["player"] for r in rows))
    rows.sort(key=lambda r: (order.index(r["player"]), r["phase"] != "early"))
    return Table(rows, MOVE_COLUMNS)
