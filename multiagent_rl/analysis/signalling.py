"""Is the emergent code structured? Topographic similarity and meaning-message information.

A *meaning* is the tuple of a task's `Task.meta` attributes (e.g. the target's colour and
shape in `signalling`, see `meaning_attributes`); a *message* is an agent's first message of the episode (the signal it sends
before hearing anything back), as its word sequence.

- Topographic similarity (Brighton & Kirby 2006; as in EGG): Spearman correlation, over
  pairs of episodes, between the Hamming distance of the meanings and the word-level edit
  distance of the messages. 1 = similar meanings get similar messages (compositional-ish),
  0 = no relation.
- Mutual information I(meaning; message) in bits, plug-in estimate from counts (biased
  upwards on small samples: compare against H(meaning), the most it can be).

>>> topographic_similarity(episodes, attributes=["colour", "shape"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from ..records import Episode
from .messages import agents_in
from .tables import Table
from .textstats import edit_distance, hamming, mutual_information_bits, spearman, words

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
        # Distances between distinct messages are computed once: emergent codes repeat a lot.
        cache: dict[tuple, int] = {}
        meaning_d, message_d = [], []
        for i in range(len(signals)):
            mi, wi = signals[i]
            for j in range(i + 1, len(signals)):
                mj, wj = signals[j]
                meaning_d.append(hamming(mi, mj))
                key = (wi, wj) if wi <= wj else (wj, wi)
                if key not in cache:
                    cache[key] = edit_distance(wi, wj)
                message_d.append(cache[key])
        rows.append({
            "agent": name,
            "attributes": ",".join(attributes),
            "episodes": len(signals),
            "pairs": len(meaning_d),
            "topographic_similarity": spearman(meaning_d, message_d),
        })
    return Table(rows, ["agent", "attributes", "episodes", "pairs", "topographic_similarity"])


def meaning_message_information(
    episodes: Sequence[Episode], attributes: Sequence[str] | None = None, agent: str | None = None
) -> Table:
    """One row per agent: plug-in ``mutual_information_bits`` between meanings and messages
    (messages compared as their word sequences), ``meaning_entropy_bits``,
    ``message_entropy_bits`` and ``normalised_mi`` = I / H(meaning) (1 = messages identify
    the meaning)."""
    agents, attributes = _resolve(episodes, agent, attributes)
    rows = []
    for name in agents:
        signals = _signals(episodes, name, attributes)
        mi, h_meaning, h_message = mutual_information_bits(signals)
        rows.append({
            "agent": name,
            "attributes": ",".join(attributes),
            "episodes": len(signals),
            "mutual_information_bits": mi if signals else None,
            "meaning_entropy_bits": h_meaning if signals else None,
            "message_entropy_bits": h_message if signals else None,
            "normalised_mi": mi / h_meaning if h_meaning > 0 else None,
        })
    return Table(rows, [
        "agent", "attributes", "episodes", "mutual_information_bits",
        "meaning_entropy_bits", "message_entropy_bits", "normalised_mi",
    ])
