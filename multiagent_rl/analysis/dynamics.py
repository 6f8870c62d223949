"""Debate dynamics and answer adoption: how answers move between rounds and between agents.

Answers compare as `textstats.answer_key` does (case/space-insensitive, numbers by value);
a missing answer (None) counts as wrong and as different from any answer. Rounds are
numbered from 0, as in the logs. The *voters* of an episode are the agents that speak in
its last round (whose majority is the default team answer).

>>> debate_dynamics(episodes)[0]["convergence_round"]        # doctest: +SKIP
>>> influence_graph(answer_adoption(episodes)).edges(data=True)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import networkx

from ..records import Episode
from .games import engine_driven
from .loading import step_bins, training_episodes
from .tables import Table, mean
from .textstats import answer_key

EPISODE_COLUMNS = [
    "episode_id", "step", "split", "rounds", "answer_changes", "convergence_round",
    "flips_wrong_to_correct", "flips_correct_to_wrong", "last_round_unanimous",
    "majority_answer", "team_answer", "majority_matches_team", "team_correct", "team_reward",
]


def _voters(episode: Episode) -> list[str]:
    if not episode.turns:
        return []
    last = max(t.round for t in episode.turns)
    return list(dict.fromkeys(t.agent for t in episode.turns if t.round == last))


def last_round_answerers(episode: Episode) -> list[str]:
    """The agents that give a parsed answer in the episode's last round."""
    if not episode.turns:
        return []
    last = max(t.round for t in episode.turns)
    return list(dict.fromkeys(t.agent for t in episode.turns if t.round == last and t.message.answer is not None))


def debating(episodes: Sequence[Episode], share: float = 0.2) -> bool:
    """Whether debate dynamics mean anything for this log: in at least `share` of its episodes
    that are not engine-driven games, several agents answer in the same last round. A
    speaker/listener chain (one agent in the last round) or a game (one mover a turn, the
    engine deciding) has no answers that could agree or change between rounds."""
    played = [e for e in episodes if e.turns and not engine_driven(e)]
    several = sum(len(last_round_answerers(e)) >= 2 for e in played)
    return several > 0 and several >= share * len(played)


def _majority(keys: Sequence[str | None]) -> str | None:
    votes = [k for k in keys if k is not None]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(v for v in votes if counts[v] == best)  # ties: the earliest voter, as the env does


def _consensus(latest: dict[str, str | None], voters: Sequence[str]) -> str | None:
    keys = [latest.get(a) for a in voters]
    if not keys or keys[0] is None or any(k != keys[0] for k in keys):
        return None
    return keys[0]


def episode_dynamics(episode: Episode) -> dict:
    """One row of `debate_dynamics` (see there)."""
    truth = answer_key(episode.task.answer)
    voters = _voters(episode)
    rounds = sorted({t.round for t in episode.turns})
    latest: dict[str, str | None] = {}
    consensus_after: dict[int, str | None] = {}
    changes = up = down = 0
    for r in rounds:
        for t in episode.turns:
            if t.round != r:
                continue
            key = answer_key(t.message.answer)
            if t.agent in latest:
                before = latest[t.agent]
                changes += key != before
                if truth is not None:
                    up += before != truth and key == truth
                    down += before == truth and key != truth
            latest[t.agent] = key
        consensus_after[r] = _consensus(latest, voters)
    final = consensus_after[rounds[-1]] if rounds else None
    convergence = None
    if final is not None:
        convergence = rounds[-1]
        for r in reversed(rounds):
            if consensus_after[r] != final:
                break
            convergence = r
    last_keys = [answer_key(t.message.answer) for t in episode.turns if rounds and t.round == rounds[-1]]
    majority = _majority(last_keys)
    team = answer_key(episode.team_answer)
    return {
        "episode_id": episode.episode_id,
        "step": episode.step,
        "split": episode.split,
        "rounds": len(rounds),
        "answer_changes": changes,
        "convergence_round": convergence,
        "flips_wrong_to_correct": up if truth is not None else None,
        "flips_correct_to_wrong": down if truth is not None else None,
        "last_round_unanimous": bool(last_keys) and last_keys[0] is not None and len(set(last_keys)) == 1,
        "majority_answer": majority,
        "team_answer": team,
        "majority_matches_team": (majority == team) if majority is not None and team is not None else None,
        "team_correct": (team == truth) if truth is not None else None,
        "team_reward": episode.team_reward(),
    }


def debate_dynamics(episodes: Sequence[Episode]) -> Table:
    """One row per episode:

    - ``answer_changes``: turns whose answer differs from the same agent's previous answer;
    - ``convergence_round``: first round from which the voters agree on the final consensus
      and keep agreeing on it (None if the last round is not unanimous);
    - ``flips_wrong_to_correct`` / ``flips_correct_to_wrong``: answer changes onto / off the
      task's reference answer (None when the task has no reference);
    - ``last_round_unanimous``; ``majority_answer`` of the last round; ``majority_matches_team``
      (does the team answer, e.g. a judge's, equal the voters' majority); ``team_correct``.
    """
    return Table((episode_dynamics(e) for e in episodes), EPISODE_COLUMNS)


def summarise_dynamics(rows: Iterable[dict]) -> dict:
    """Means of a `debate_dynamics` table: rates over episodes where each is defined."""
    rows = list(rows)

    def rate(column: str) -> float | None:
        return mean(None if r[column] is None else float(r[column]) for r in rows)

    converged = [r["convergence_round"] for r in rows]
    return {
        "episodes": len(rows),
        "team_accuracy": rate("team_correct"),
        "team_reward": rate("team_reward"),
        "answer_changes": rate("answer_changes"),
        "flips_wrong_to_correct": rate("flips_wrong_to_correct"),
        "flips_correct_to_wrong": rate("flips_correct_to_wrong"),
        "last_round_agreement": rate("last_round_unanimous"),
        "converged": mean(float(c is not None) for c in converged) if rows else None,
        "mean_convergence_round": mean(converged),
        "majority_team_agreement": rate("majority_matches_team"),
    }


def debate_by_step(episodes: Sequence[Episode], bins: int = 25) -> Table:
    """`summarise_dynamics` per training-step bin (``step`` = the bin's first step)."""
    ordered = [e for e in training_episodes(episodes) if e.step is not None]
    return dynamics_by_step([episode_dynamics(e) for e in ordered], bins)


def dynamics_by_step(rows: Sequence[dict], bins: int = 25) -> Table:
    """`debate_by_step` from already computed `debate_dynamics` rows (those with a step)."""
    rows = [r for r in rows if r["step"] is not None]
    label = step_bins([r["step"] for r in rows], bins)
    grouped: dict[int, list[dict]] = {}
    for r in rows:
        grouped.setdefault(label[r["step"]], []).append(r)
    return Table({"step": s} | summarise_dynamics(grouped[s]) for s in sorted(grouped))


def debate_rounds(episodes: Sequence[Episode]) -> Table:
    """One row per round: ``turns`` with an answer slot, ``changed`` (answer differs from the
    agent's previous one, among ``with_previous`` turns that have one) and ``change_rate``,
    ``accuracy`` (answers equal to the reference) and ``unanimous_rate`` (episodes where all
    of the round's answers agree)."""
    stats: dict[int, Counter] = {}
    for e in episodes:
        truth = answer_key(e.task.answer)
        latest: dict[str, str | None] = {}
        by_round: dict[int, list[str | None]] = {}
        for t in sorted(e.turns, key=lambda t: t.round):
            key = answer_key(t.message.answer)
            s = stats.setdefault(t.round, Counter())
            s["turns"] += 1
            if t.agent in latest:
                s["with_previous"] += 1
                s["changed"] += key != latest[t.agent]
            if truth is not None:
                s["judged"] += 1
                s["correct"] += key == truth
            latest[t.agent] = key
            by_round.setdefault(t.round, []).append(key)
        for r, keys in by_round.items():
            stats[r]["episodes"] += 1
            stats[r]["unanimous"] += keys[0] is not None and len(set(keys)) == 1
    rows = []
    for r in sorted(stats):
        s = stats[r]
        rows.append({
            "round": r,
            "episodes": s["episodes"],
            "turns": s["turns"],
            "with_previous": s["with_previous"],
            "changed": s["changed"],
            "change_rate": s["changed"] / s["with_previous"] if s["with_previous"] else None,
            "accuracy": s["correct"] / s["judged"] if s["judged"] else None,
            "unanimous_rate": s["unanimous"] / s["episodes"] if s["episodes"] else None,
        })
    return Table(rows, ["round", "episodes", "turns", "with_previous", "changed", "change_rate", "accuracy", "unanimous_rate"])


def answer_adoption(episodes: Sequence[Episode]) -> Table:
    """How often receivers take up senders' answers, per edge sender->receiver.

    For each episode and each receiver, look at its final turn (round R) and its previous
    answer (its latest answer before R; None if it had not spoken). An *opportunity* is an
    edge whose sender delivered to the receiver, before R, an answer different from that
    previous answer; an *adoption* is an opportunity where the receiver's final answer equals
    one of those answers (so the receiver changed its mind to the sender's proposal; senders
    proposing the same answer all get the credit). ``adoption_rate = adoptions / opportunities``.
    """
    counts: dict[tuple[str, str], Counter] = {}
    for e in episodes:
        final_turn = {}
        for t in e.turns:
            if t.agent not in final_turn or t.round >= final_turn[t.agent].round:
                final_turn[t.agent] = t
        for receiver, final in final_turn.items():
            earlier = [t for t in e.turns if t.agent == receiver and t.round < final.round]
            previous = answer_key(earlier[-1].message.answer) if earlier else None
            final_key = answer_key(final.message.answer)
            proposals: dict[str, set[str]] = {}
            for t in e.turns:
                key = answer_key(t.message.answer)
                if t.round < final.round and receiver in t.message.receivers and key is not None and key != previous:
                    proposals.setdefault(t.agent, set()).add(key)
            for sender, keys in proposals.items():
                c = counts.setdefault((sender, receiver), Counter())
                c["opportunities"] += 1
                c["adoptions"] += final_key in keys
    rows = [
        {"sender": s, "receiver": r, "opportunities": c["opportunities"], "adoptions": c["adoptions"],
         "adoption_rate": c["adoptions"] / c["opportunities"]}
        for (s, r), c in sorted(counts.items())
    ]
    return Table(rows, ["sender", "receiver", "opportunities", "adoptions", "adoption_rate"])


def influence_graph(table: Iterable[dict], weight: str = "adoption_rate", agents: Iterable[str] = ()) -> networkx.DiGraph:
    """A networkx.DiGraph with an edge sender->receiver per row of `table` (e.g.
    `answer_adoption` or `summarise_ablation`), edge attribute ``weight`` = ``row[weight]``
    and every other column kept as an attribute. `agents` adds nodes that have no edge.

    Examples:
        >>> g = influence_graph([{"sender": "a", "receiver": "b", "adoption_rate": 0.5}])
        >>> g["a"]["b"]["weight"]
        0.5
    """
    graph = networkx.DiGraph()
    graph.add_nodes_from(agents)
    for row in table:
        if weight not in row:
            raise KeyError(f"influence_graph: rows have no column {weight!r}; columns: {', '.join(row)}")
        attrs = {k: v for k, v in row.items() if k not in ("sender", "receiver")}
        value = row[weight]
        graph.add_edge(row["sender"], row["receiver"], **attrs, weight=float(value) if value is not None else 0.0)
    return graph
