"""Is the emergent code structured? Topographic similarity and meaning-message information.

A *meaning* is the tuple of a task's `Task.meta` attributes (e.g. the target's colour and
shape in `signalling`, see `meaning_attributes`); a *message* is an agent's first message of the episode (the signal it sends
before hearing anything back), as its word sequence.

- Topographic similarity (Brighton & Kirby 2006; as in EGG): Spearman correlation, over
  pairs of episodes, between the Hamming distance of the meanings and the word-level edit
  distance of the messages. 1 = similar meanings get similar messages (compositional-ish),
  0 = no relation. Positional and bag-of-symbols disentanglement (posdis, bosdis; see
  `disentanglement`) ask whether each position or each symbol names one attribute.
- Mutual information I(meaning; message) in bits, plug-in estimate from counts (biased
  upwards on small samples: compare against H(meaning), the most it can be). The
  adjusted figure subtracts the plug-in value with the meanings shuffled across the same
  messages, which is what this many episodes with these messages give by chance (a
  speaker whose every message is different scores H(meaning) plug-in, and about 0
  adjusted); normalised by what is left above chance, as adjusted mutual information
  (Vinh et al. 2010) is, it reads 0 for no relation and 1 for messages that identify the
  meaning.

Over training (`signalling_by_step`) both are computed per bin of training steps, and
`messages_by_meaning` puts each meaning's early and late messages side by side, and
`lexicon` lists which symbol stands for each attribute value: the protocol forming, in
numbers and in words.

>>> topographic_similarity(episodes, attributes=["colour", "shape"])  # doctest: +SKIP
>>> signalling_by_step(run.episodes, agent="speaker")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..answers import answers_match
from ..records import Episode
from .disentanglement import (
    bag_of_symbols_disentanglement,
    positional_disentanglement,
    shuffled_baseline,
    topsim,
)
from .loading import step_bins, training_episodes, training_phases
from .messages import agents_in
from .tables import Table
from .textstats import mutual_information_bits, words

MEANING_KEYS = ("meaning", "target")  # a meta dict under one of these names *is* the meaning
_SCALARS = (str, int, float, bool, type(None))


def _paths(meta: dict[str, Any]) -> list[str]:
    for key in MEANING_KEYS:
        if isinstance(meta.get(key), dict):
            return [f"{key}.{k}" for k, v in meta[key].items() if isinstance(v, _SCALARS)]
    return [k for k, v in meta.items() if isinstance(v, _SCALARS)]


def lookup(meta: dict[str, Any], path: str) -> Any:
    """``meta["target"]["colour"]`` for the path "target.colour"; KeyError if absent."""
    value: Any = meta
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def meaning_attributes(episodes: Sequence[Episode]) -> list[str]:
    """The meaning attributes every task has, as (dotted) Task.meta paths: the scalar fields
    of ``meta["meaning"]`` or ``meta["target"]`` when that is a dict (as in `signalling`:
    "target.colour", "target.shape"), else the scalar top-level keys. [] if none is common."""
    common: list[str] | None = None
    for e in episodes:
        paths = _paths(e.task.meta)
        common = paths if common is None else [p for p in common if p in paths]
    return common or []


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def _signals(episodes: Sequence[Episode], agent: str, attributes: Sequence[str]) -> list[tuple[tuple, tuple[str, ...]]]:
    """(meaning, message words) per episode in which `agent` spoke."""
    out = []
    for e in episodes:
        first = next((t for t in e.turns if t.agent == agent), None)
        if first is None:
            continue
        try:
            meaning = tuple(_hashable(lookup(e.task.meta, a)) for a in attributes)
        except KeyError:
            continue  # this task lacks an attribute: it has no comparable meaning
        out.append((meaning, words(first.message.text)))
    return out


def _resolve(episodes: Sequence[Episode], agent: str | None, attributes: Sequence[str] | None) -> tuple[list[str], list[str]]:
    attributes = list(attributes) if attributes is not None else meaning_attributes(episodes)
    if not attributes:
        raise ValueError(
            "no meaning attributes: pass attributes=[...] naming Task.meta keys, "
            "or analyse episodes whose tasks all carry meta (e.g. colour, shape)"
        )
    agents = [agent] if agent is not None else agents_in(episodes)
    return agents, attributes


def _information(signals: Sequence[tuple[tuple, tuple[str, ...]]], shuffles: int, seed: int) -> dict[str, float | None]:
    """Plug-in I(meaning; message), H(meaning), H(message), the mean plug-in I with the
    meanings shuffled over the same messages, and the difference (adjusted)."""
    mi, h_meaning, h_message = mutual_information_bits(signals)
    meanings = [m for m, _ in signals]
    messages = [w for _, w in signals]
    rng = random.Random(seed)
    shuffled = []
    for _ in range(shuffles):
        rng.shuffle(meanings)
        shuffled.append(mutual_information_bits(zip(meanings, messages, strict=True))[0])
    chance = sum(shuffled) / len(shuffled) if shuffled else None
    # What a code could add above chance; when the messages repeat so little that shuffling
    # leaves under a tenth of H(meaning), the ratio is noise and is left undefined.
    room = h_meaning - chance if chance is not None else 0.0
    return {
        "mutual_information_bits": mi if signals else None,
        "meaning_entropy_bits": h_meaning if signals else None,
        "message_entropy_bits": h_message if signals else None,
        "normalised_mi": mi / h_meaning if h_meaning > 0 else None,
        "shuffled_mi_bits": chance if signals else None,
        "adjusted_mi_bits": mi - chance if signals and chance is not None else None,
        "adjusted_normalised_mi": (mi - chance) / room if signals and chance is not None and room > 0.1 * h_meaning else None,
    }


def topographic_similarity(
    episodes: Sequence[Episode],
    attributes: Sequence[str] | None = None,
    agent: str | None = None,
    max_episodes: int = 300,
    seed: int = 0,
) -> Table:
    """One row per agent (or just `agent`): ``topographic_similarity`` (Spearman rho between
    meaning Hamming distances and message edit distances over all pairs of up to
    `max_episodes` episodes, sampled with `seed`), with the ``episodes`` and ``pairs`` used.
    `attributes` (dotted Task.meta paths, e.g. "target.colour") default to `meaning_attributes`."""
    agents, attributes = _resolve(episodes, agent, attributes)
    rows = []
    for name in agents:
        signals = _signals(episodes, name, attributes)
        if len(signals) > max_episodes:
            signals = random.Random(seed).sample(signals, max_episodes)
        rows.append({
            "agent": name,
            "attributes": ",".join(attributes),
            "episodes": len(signals),
            "pairs": len(signals) * (len(signals) - 1) // 2,
            "topographic_similarity": topsim(signals),
        })
    return Table(rows, ["agent", "attributes", "episodes", "pairs", "topographic_similarity"])


INFORMATION_COLUMNS = [
    "mutual_information_bits", "meaning_entropy_bits", "message_entropy_bits", "normalised_mi",
    "shuffled_mi_bits", "adjusted_mi_bits", "adjusted_normalised_mi",
]


def meaning_message_information(
    episodes: Sequence[Episode],
    attributes: Sequence[str] | None = None,
    agent: str | None = None,
    shuffles: int = 20,
    seed: int = 0,
) -> Table:
    """One row per agent: plug-in ``mutual_information_bits`` between meanings and messages
    (messages compared as their word sequences), ``meaning_entropy_bits``,
    ``message_entropy_bits``, ``normalised_mi`` = I / H(meaning) (1 = messages identify
    the meaning), ``shuffled_mi_bits`` (the mean plug-in I over `shuffles` shuffles of the
    meanings, seeded: the small-sample bias), ``adjusted_mi_bits`` = I - shuffled and
    ``adjusted_normalised_mi`` = (I - shuffled) / (H(meaning) - shuffled), as in adjusted
    mutual information: about 0 for messages unrelated to the meaning however varied they
    are, 1 when the messages identify it; None when the messages repeat too little to tell
    (shuffling leaves under a tenth of H(meaning) above chance)."""
    agents, attributes = _resolve(episodes, agent, attributes)
    rows = []
    for name in agents:
        signals = _signals(episodes, name, attributes)
        rows.append({"agent": name, "attributes": ",".join(attributes), "episodes": len(signals)}
                    | _information(signals, shuffles, seed))
    return Table(rows, ["agent", "attributes", "episodes", *INFORMATION_COLUMNS])


def signalling_by_step(
    episodes: Sequence[Episode],
    attributes: Sequence[str] | None = None,
    agent: str | None = None,
    bins: int = 25,
    max_episodes: int = 200,
    shuffles: int = 20,
    seed: int = 0,
    split: str = "train",
) -> Table:
    """The code's structure over training: one row per (bin of training steps, agent) with
    ``split``, ``step`` (the bin's first step), ``episodes``, ``topographic_similarity``
    (over up to `max_episodes` of the bin's episodes, sampled with `seed`),
    ``mutual_information_bits``, ``normalised_mi``, ``adjusted_mi_bits``, ``adjusted_normalised_mi`` and
    ``meaning_entropy_bits`` (see `meaning_message_information`), then
    ``topographic_similarity_shuffled`` (over the same sample), ``posdis``, ``posdis_shuffled``,
    ``bosdis`` and ``bosdis_shuffled`` (see `disentanglement`; "_shuffled" is the mean over
    `shuffles` seeded shuffles of the messages across the meanings, what chance gives).
    split="train": train-split episodes with a step, in at most `bins` bins of equal step
    width; split="eval": the held-out evaluations, one row per evaluated step (step 0 is
    the untrained model)."""
    columns = ["split", "step", "agent", "episodes", "topographic_similarity", "mutual_information_bits",
               "normalised_mi", "adjusted_mi_bits", "adjusted_normalised_mi", "meaning_entropy_bits",
               "topographic_similarity_shuffled", "posdis", "posdis_shuffled", "bosdis", "bosdis_shuffled"]
    if split == "train":
        ordered = [e for e in training_episodes(episodes) if e.step is not None]
        label = step_bins([e.step for e in ordered], bins)
    else:
        ordered = [e for e in episodes if e.split == split and e.step is not None]
        label = {e.step: e.step for e in ordered}
    if not ordered:
        return Table([], columns)
    agents, attributes = _resolve(ordered, agent, attributes)
    grouped: dict[int, list[Episode]] = {}
    for e in ordered:
        grouped.setdefault(label[e.step], []).append(e)
    rows = []
    for step in sorted(grouped):
        for name in agents:
            signals = _signals(grouped[step], name, attributes)
            if not signals:
                continue
            sampled = random.Random(seed).sample(signals, max_episodes) if len(signals) > max_episodes else signals
            information = _information(signals, shuffles, seed)
            rows.append({
                "split": split,
                "step": step,
                "agent": name,
                "episodes": len(signals),
                "topographic_similarity": topsim(sampled),
                "mutual_information_bits": information["mutual_information_bits"],
                "normalised_mi": information["normalised_mi"],
                "adjusted_mi_bits": information["adjusted_mi_bits"],
                "adjusted_normalised_mi": information["adjusted_normalised_mi"],
                "meaning_entropy_bits": information["meaning_entropy_bits"],
                "topographic_similarity_shuffled": shuffled_baseline(topsim, sampled, shuffles, seed),
                "posdis": positional_disentanglement(signals),
                "posdis_shuffled": shuffled_baseline(positional_disentanglement, signals, shuffles, seed),
                "bosdis": bag_of_symbols_disentanglement(signals),
                "bosdis_shuffled": shuffled_baseline(bag_of_symbols_disentanglement, signals, shuffles, seed),
            })
    return Table(rows, columns)


def senders(episodes: Sequence[Episode]) -> list[str]:
    """Agents whose first message of an episode goes to someone (the signallers), in
    first-seen order."""
    found: dict[str, None] = {}
    for e in episodes:
        seen: set[str] = set()
        for t in e.turns:
            if t.agent not in seen and t.message.receivers:
                found.setdefault(t.agent)
            seen.add(t.agent)
    return list(found)


def _signaller(episodes: Sequence[Episode]) -> str | None:
    """The first agent that sends its first message to someone (else the first agent)."""
    found = senders(episodes) or agents_in(episodes)
    return found[0] if found else None


def _top_messages(texts: Sequence[str], top: int) -> str:
    """'"the red circle" ×5 · "the target is" ×2': the most common messages (compared as
    word sequences, shown as their most common text)."""
    by_words: dict[tuple[str, ...], Counter] = {}
    for text in texts:
        by_words.setdefault(words(text), Counter())[" ".join(text.split())] += 1
    ranked = sorted(by_words.values(), key=lambda c: (-sum(c.values()), c.most_common(1)[0][0]))
    shown = []
    for counts in ranked[:top]:
        text = counts.most_common(1)[0][0]
        text = text if len(text) <= 48 else text[:47] + "…"
        shown.append(f"“{text}” ×{sum(counts.values())}")
    if len(ranked) > top:
        shown.append(f"+{sum(sum(c.values()) for c in ranked[top:])} more")
    return " · ".join(shown)


def messages_by_meaning(
    episodes: Sequence[Episode],
    attributes: Sequence[str] | None = None,
    agent: str | None = None,
    rows: int = 12,
    top: int = 2,
) -> Table:
    """Early and late messages side by side: one row per meaning seen in both the first and
    the last third of the training steps (the most frequent `rows` of them), with its
    ``early`` and ``late`` messages (the `top` most common, with counts) and how many
    episodes each phase had. `agent` defaults to the first agent that sends its first
    message to someone (in `signalling`, the speaker)."""
    early, late = training_phases(episodes)
    every = [*early, *late]
    columns = ["meaning", "agent", "early_episodes", "early", "late_episodes", "late"]
    if not every:
        return Table([], columns)
    agent = agent if agent is not None else _signaller(every)
    if agent is None:
        return Table([], columns)
    _, attributes = _resolve(every, agent, attributes)

    def by_meaning(phase: Sequence[Episode]) -> dict[tuple, list[str]]:
        out: dict[tuple, list[str]] = {}
        for e in phase:
            first = next((t for t in e.turns if t.agent == agent), None)
            if first is None:
                continue
            try:
                meaning = tuple(_hashable(lookup(e.task.meta, a)) for a in attributes)
            except KeyError:
                continue
            out.setdefault(meaning, []).append(first.message.text)
        return out

    before, after = by_meaning(early), by_meaning(late)
    shared = sorted(set(before) & set(after), key=lambda m: (-(len(before[m]) + len(after[m])), str(m)))
    return Table(
        [
            {
                "meaning": " ".join(str(v) for v in meaning),
                "agent": agent,
                "early_episodes": len(before[meaning]),
                "early": _top_messages(before[meaning], top),
                "late_episodes": len(after[meaning]),
                "late": _top_messages(after[meaning], top),
            }
            for meaning in shared[:rows]
        ],
        columns,
    )


LEXICON_COLUMNS = ["phase", "agent", "attribute", "value", "position", "symbol", "share", "episodes"]


def lexicon(
    episodes: Sequence[Episode],
    agent: str | None = None,
    attributes: Sequence[str] | None = None,
    phase: str = "late",
    positions: int = 4,
) -> Table:
    """The code's dictionary: one row per (attribute, value, message position) with the
    ``symbol`` `agent`'s first messages use most at that position when the meaning has that
    value, its ``share`` of those ``episodes`` (1 = always), over the first `positions`
    positions. phase="early" / "late": the first / last third of the training steps
    (`training_phases`). A compositional code reads as a word list (red -> "re" at position 0,
    share 1); a message too short for a position has no symbol there (None). `agent` defaults
    as in `messages_by_meaning`."""
    if phase not in ("early", "late"):
        raise ValueError(f"phase must be 'early' or 'late', got {phase!r}")
    early, late = training_phases(episodes)
    every = [*early, *late]
    agent = agent if agent is not None else _signaller(every)
    if agent is None:
        return Table([], LEXICON_COLUMNS)
    _, attributes = _resolve(every, agent, attributes)
    signals = _signals(early if phase == "early" else late, agent, attributes)
    length = min(positions, max((len(w) for _, w in signals), default=0))
    rows = []
    for a, attribute in enumerate(attributes):
        by_value: dict[Any, list[tuple[str, ...]]] = {}
        for meaning, message in signals:
            by_value.setdefault(meaning[a], []).append(message)
        for value in sorted(by_value, key=str):
            messages = by_value[value]
            for position in range(length):
                counts = Counter(w[position] if position < len(w) else None for w in messages)
                # Ties go to the first symbol alphabetically, no symbol last.
                symbol, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
                rows.append({"phase": phase, "agent": agent, "attribute": attribute, "value": value,
                             "position": position, "symbol": symbol, "share": n / len(messages),
                             "episodes": len(messages)})
    return Table(rows, LEXICON_COLUMNS)


def messages_before_after(episodes: Sequence[Episode], agent: str | None = None, rows: int = 12) -> Table:
    """The same held-out tasks before and after training: pairs the episodes of the first
    and the last held-out evaluation by task, one row per task (up to `rows`) with the
    ``target``, the ``objects`` the listener saw, ``agent``'s first message and whether the
    team answer was right at each of the two steps (``before_step`` and ``after_step``).
    Empty unless the log holds evaluations at two steps. `agent` defaults to the first
    agent that sends its first message to someone."""
    columns = ["target", "objects", "before_step", "before", "before_right", "after_step", "after", "after_right"]
    evaluated = [e for e in episodes if e.split == "eval" and e.step is not None]
    steps = sorted({e.step for e in evaluated})
    if len(steps) < 2:
        return Table([], columns)
    agent = agent if agent is not None else _signaller(evaluated)

    def first_message(e: Episode) -> str | None:
        return next((t.message.text for t in e.turns if t.agent == agent), None)

    def right(e: Episode) -> bool | None:
        return answers_match(e.team_answer, e.task.answer) if e.task.answer is not None else None

    first = {e.task.key: e for e in evaluated if e.step == steps[0]}
    last = {e.task.key: e for e in evaluated if e.step == steps[-1]}
    out = []
    for key in [k for k in first if k in last][:rows]:
        before, after = first[key], last[key]
        objects = before.task.meta.get("listener_order") or before.task.meta.get("candidates")
        out.append({
            "target": before.task.answer,
            "objects": ", ".join(map(str, objects)) if isinstance(objects, list) else None,
            "before_step": steps[0],
            "before": first_message(before),
            "before_right": right(before),
            "after_step": steps[-1],
            "after": first_message(after),
            "after_right": right(after),
        })
    return Table(out, columns)
