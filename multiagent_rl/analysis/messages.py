"""What agents say: volume, length, lexical diversity and entropy per agent and per graph
edge, how it changes over training, and how different the agents' vocabularies are.

Every function takes a list of `Episode`s and returns a `Table` (a list of dicts).
Definitions (words as in `textstats.words`):

- ``mean_chars`` / ``mean_words``: per message; ``mean_tokens``: the completion tokens the
  backend recorded per message (0 where a log did not record them).
- ``distinct_1`` / ``distinct_2``: distinct uni/bigrams over all uni/bigrams of the messages.
- ``type_token_ratio``: per message distinct words / words, averaged over non-empty messages.
- ``entropy_bits``: entropy of the word unigram distribution of all the messages.
- ``js_distance``: Jensen-Shannon distance (base 2, 0 = same words, 1 = no word shared).

>>> agent_message_stats(episodes).where(agent="solver_a")   # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, combinations

from ..records import Episode, Message, Turn
from .loading import step_bins, training_episodes, training_phases
from .tables import Table
from .textstats import entropy_bits, js_distance, message_features, words

STAT_COLUMNS = [
    "messages", "mean_chars", "mean_tokens", "mean_words",
    "distinct_1", "distinct_2", "type_token_ratio", "entropy_bits",
]


def text_stats(turns: Sequence[Turn]) -> dict[str, float | int | None]:
    """The STAT_COLUMNS of a set of turns (their messages)."""
    n = len(turns)
    if n == 0:
        return dict.fromkeys(STAT_COLUMNS) | {"messages": 0}
    # Per-message features are cached by text; the sums run in C (this sees every message of
    # long logs several times).
    features = [message_features(t.message.text) for t in turns]
    unigrams = Counter(chain.from_iterable(f[1] for f in features))
    word_total = sum(unigrams.values())
    bigrams = set().union(*(f[2] for f in features))
    bigram_total = sum(f[3] for f in features)
    ratios = [f[4] for f in features if f[4] is not None]
    chars = sum(f[0] for f in features)
    tokens = sum(t.completion_tokens for t in turns)
    return {
        "messages": n,
        "mean_chars": chars / n,
        "mean_tokens": tokens / n,
        "mean_words": word_total / n,
        "distinct_1": len(unigrams) / word_total if word_total else None,
        "distinct_2": len(bigrams) / bigram_total if bigram_total else None,
        "type_token_ratio": sum(ratios) / len(ratios) if ratios else None,
        "entropy_bits": entropy_bits(unigrams),
    }


def agents_in(episodes: Iterable[Episode]) -> list[str]:
    """Agent names in order of first appearance (teams first, then speakers)."""
    seen: dict[str, None] = {}
    for e in episodes:
        for agent in e.teams:
            if agent not in seen:
                seen[agent] = None
        for t in e.turns:
            if t.agent not in seen:
                seen[t.agent] = None
    return list(seen)


def _turns_by_agent(episodes: Iterable[Episode]) -> dict[str, list[Turn]]:
    grouped: dict[str, list[Turn]] = {}
    for e in episodes:
        for t in e.turns:
            grouped.setdefault(t.agent, []).append(t)
    return grouped


def agent_message_stats(episodes: Sequence[Episode]) -> Table:
    """One row per agent: ``agent`` plus STAT_COLUMNS over every message it sent."""
    grouped = _turns_by_agent(episodes)
    rows = [{"agent": a} | text_stats(grouped[a]) for a in agents_in(episodes) if a in grouped]
    return Table(rows, ["agent", *STAT_COLUMNS])


def edge_message_stats(episodes: Sequence[Episode]) -> Table:
    """One row per graph edge that carried a message: ``sender``, ``receiver`` plus
    STAT_COLUMNS over the messages delivered along it (``messages`` = deliveries)."""
    grouped: dict[tuple[str, str], list[Turn]] = {}
    sent: dict[str, int] = {}
    for e in episodes:
        for t in e.turns:
            sent[t.agent] = sent.get(t.agent, 0) + 1
            for receiver in dict.fromkeys(t.message.receivers):
                grouped.setdefault((t.agent, receiver), []).append(t)
    order = {a: i for i, a in enumerate(agents_in(episodes))}
    edges = sorted(grouped, key=lambda edge: (order.get(edge[0], 1e9), order.get(edge[1], 1e9)))
    by_sender: dict[str, dict] = {}
    rows = []
    for s, r in edges:
        turns = grouped[s, r]
        if len(turns) == sent[s]:  # every message of s reached r: the stats are s's own, computed once
            stats = by_sender.setdefault(s, text_stats(turns))
        else:
            stats = text_stats(turns)
        rows.append({"sender": s, "receiver": r} | stats)
    return Table(rows, ["sender", "receiver", *STAT_COLUMNS])


def message_stats_by_step(episodes: Sequence[Episode], bins: int = 25) -> Table:
    """One row per (training-step bin, agent): ``step`` (the bin's first step), ``agent``,
    ``episodes`` and STAT_COLUMNS, for plotting change over training. Uses train-split
    episodes with a step; at most `bins` bins of equal step width."""
    ordered = [e for e in training_episodes(episodes) if e.step is not None]
    if not ordered:
        return Table([], ["step", "agent", "episodes", *STAT_COLUMNS])
    label = step_bins([e.step for e in ordered], bins)
    grouped: dict[int, list[Episode]] = {}
    for e in ordered:
        grouped.setdefault(label[e.step], []).append(e)
    agents = agents_in(ordered)
    rows = []
    for step in sorted(grouped):
        by_agent = _turns_by_agent(grouped[step])
        for agent in agents:
            if agent in by_agent:
                rows.append({"step": step, "agent": agent, "episodes": len(grouped[step])} | text_stats(by_agent[agent]))
    return Table(rows, ["step", "agent", "episodes", *STAT_COLUMNS])


def word_distribution(messages: Iterable[Message]) -> Counter:
    counts: Counter = Counter()
    for m in messages:
        counts.update(words(m.text))
    return counts


def _agent_words(episodes: Iterable[Episode]) -> dict[str, Counter]:
    return {a: word_distribution(t.message for t in turns) for a, turns in _turns_by_agent(episodes).items()}


def message_drift(episodes: Sequence[Episode], parts: int = 3) -> Table:
    """How much each agent's language moved over training: the JS distance between its word
    distribution in the first and last ``1/parts`` of the training steps (see
    `training_phases`), with the step ranges and mean message lengths of both phases."""
    early, late = training_phases(episodes, parts)
    early_words, late_words = _agent_words(early), _agent_words(late)
    early_turns, late_turns = _turns_by_agent(early), _turns_by_agent(late)

    def steps(phase: list[Episode]) -> str | None:
        values = [e.step for e in phase if e.step is not None]
        return f"{min(values)}-{max(values)}" if values else None

    rows = []
    for agent in agents_in(episodes):
        if agent not in early_turns and agent not in late_turns:
            continue
        ea, la = early_turns.get(agent, []), late_turns.get(agent, [])
        rows.append({
            "agent": agent,
            "early_steps": steps(early),
            "late_steps": steps(late),
            "early_messages": len(ea),
            "late_messages": len(la),
            "early_mean_chars": sum(len(t.message.text) for t in ea) / len(ea) if ea else None,
            "late_mean_chars": sum(len(t.message.text) for t in la) / len(la) if la else None,
            "js_distance": js_distance(early_words.get(agent, Counter()), late_words.get(agent, Counter())),
        })
    return Table(rows, [
        "agent", "early_steps", "late_steps", "early_messages", "late_messages",
        "early_mean_chars", "late_mean_chars", "js_distance",
    ])


def role_specialisation(episodes: Sequence[Episode]) -> Table:
    """How different the agents talk: one row per agent pair with the JS distance between
    their word distributions (0 = same vocabulary and frequencies, 1 = disjoint)."""
    distributions = _agent_words(episodes)
    agents = [a for a in agents_in(episodes) if a in distributions]
    rows = [
        {"agent_a": a, "agent_b": b, "js_distance": js_distance(distributions[a], distributions[b])}
        for a, b in combinations(agents, 2)
    ]
    return Table(rows, ["agent_a", "agent_b", "js_distance"])
