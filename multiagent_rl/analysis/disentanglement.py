"""How a symbol code is built, against chance: topographic similarity and positional and
bag-of-symbols disentanglement of (meaning, message) signals.

A *signal* is a (meaning, message) pair as `signalling` collects them: the meaning a tuple of
attribute values, the message a tuple of symbols (words).

- `topsim`: Spearman correlation, over pairs of signals, between the Hamming distance of the
  meanings and the edit distance of the messages (Brighton & Kirby 2006).
- `positional_disentanglement` (posdis) and `bag_of_symbols_disentanglement` (bosdis), from
  Chaabouni et al. 2020, "Compositionality and Generalization in Emergent Languages", as EGG
  computes them (``egg/core/language_analysis.py``, ``Disent``): does each part of the
  message name one attribute and nothing else? 1 = yes, 0 = no part singles one out.
- `shuffled_baseline`: a metric's mean with the messages shuffled across the meanings, what
  these messages score with no relation to the meanings. Entropies and mutual information are
  plug-in estimates from counts, biased upwards on few samples: read a score against it.

>>> values = [("red", "square"), ("red", "circle"), ("blue", "square"), ("blue", "circle")]
>>> code = [(m, (m[0][:2], m[1][:2])) for m in values]          # ("re", "sq"), ...
>>> positional_disentanglement(code), bag_of_symbols_disentanglement(code), topsim(code)
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache

import numpy as np

from .textstats import edit_distance, spearman

Signal = tuple[tuple, tuple[str, ...]]


def _codes(values: Sequence[Hashable]) -> np.ndarray:
    """Each value as a small integer, in first-seen order: (n,)."""
    index: dict[Hashable, int] = {}
    return np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))


def _meanings(signals: Sequence[Signal]) -> np.ndarray:
    """The meanings' attribute values as codes: (n, attributes)."""
    columns = list(zip(*(m for m, _ in signals), strict=True))
    if not columns:
        return np.zeros((len(signals), 0), dtype=np.int64)
    return np.stack([_codes(c) for c in columns], axis=1)


def _entropies(rows: np.ndarray) -> np.ndarray:
    """Plug-in entropy in bits of each row of non-negative integer codes: (R, n) -> (R,)."""
    n_rows, n = rows.shape
    width = int(rows.max()) + 1
    # One np.unique over every row at once: the key says which row a value belongs to.
    keys, counts = np.unique((rows + width * np.arange(n_rows)[:, None]).ravel(), return_counts=True)
    p = counts / n
    return np.bincount(keys // width, weights=-p * np.log2(p), minlength=n_rows)


def _mean_gap(variables: np.ndarray, meanings: np.ndarray) -> float | None:
    """Mean, over the rows of `variables` (R, n) that vary, of (I_1st - I_2nd) / H(row): the
    two attributes (columns of `meanings`, (n, A)) with the most information about the row."""
    if variables.size == 0 or meanings.shape[1] == 0:
        return None
    h = _entropies(variables)  # (R,)
    informations = []
    for attribute in meanings.T:  # (n,)
        k = int(attribute.max()) + 1
        joint = _entropies(variables * k + attribute)  # (R,)
        informations.append(h + _entropies(attribute[None, :]) - joint)
    ranked = -np.sort(-np.stack(informations, axis=1), axis=1)  # (R, A), most informative first
    # One attribute: nothing to be confused with, the gap is all the information.
    second = ranked[:, 1] if ranked.shape[1] > 1 else 0.0
    varying = h > 0  # EGG skips the positions whose symbol never changes
    if not varying.any():
        return None
    return float(((ranked[:, 0] - second)[varying] / h[varying]).mean())


def positional_disentanglement(signals: Sequence[Signal]) -> float | None:
    """posdis (Chaabouni et al. 2020): for each message position, the gap between the
    mutual information of its symbol with the most and the second most informative attribute,
    over the symbol's entropy, averaged over the positions whose symbol varies. 1 = each
    position names one attribute only; None when no position varies. A message shorter than
    a position has no symbol there (None), as EGG pads after the end of message."""
    if not signals:
        return None
    length = max(len(w) for _, w in signals)
    if length == 0:
        return None
    positions = np.stack([_codes([w[j] if j < len(w) else None for _, w in signals]) for j in range(length)])
    return _mean_gap(positions, _meanings(signals))  # positions: (length, n)


def bag_of_symbols_disentanglement(signals: Sequence[Signal]) -> float | None:
    """bosdis (Chaabouni et al. 2020): posdis with each vocabulary symbol's count in the
    message in place of a position, so word order does not matter ("sq re" = "re sq"):
    the information gap over H(count), averaged over the symbols whose count varies. None
    when no count varies."""
    vocabulary = sorted({s for _, w in signals for s in w})
    if not vocabulary:
        return None
    index = {s: k for k, s in enumerate(vocabulary)}
    counts = np.zeros((len(vocabulary), len(signals)), dtype=np.int64)  # (symbols, n)
    for i, (_, message) in enumerate(signals):
        for symbol, c in Counter(message).items():
            counts[index[symbol], i] = c
    return _mean_gap(counts, _meanings(signals))


class _Distances:
    """The pairs i < j of some signals with their meaning Hamming distances, and the edit
    distances between their distinct messages, each computed once: emergent codes repeat a
    lot, and shuffling the messages only re-pairs them."""

    def __init__(self, signals: tuple[Signal, ...]):
        meanings = _meanings(signals)  # (n, A)
        self.first, self.second = np.triu_indices(len(signals), 1)  # (pairs,) each
        self.meaning = (meanings[self.first] != meanings[self.second]).sum(axis=1)  # (pairs,)
        distinct = sorted({w for _, w in signals})
        index = {w: k for k, w in enumerate(distinct)}
        self.message_index = [index[w] for _, w in signals]
        self.edits = np.zeros((len(distinct), len(distinct)), dtype=np.int64)  # (messages, messages)
        for a in range(len(distinct)):
            for b in range(a + 1, len(distinct)):
                self.edits[a, b] = self.edits[b, a] = edit_distance(distinct[a], distinct[b])

    def rho(self, message_index: Sequence[int]) -> float | None:
        """Spearman rho with signal i sending message ``message_index[i]``."""
        m = np.asarray(message_index)
        return spearman(self.meaning, self.edits[m[self.first], m[self.second]])


@lru_cache(maxsize=4)  # topsim and its shuffled baseline on the same signals share the edit distances
def _distances(signals: tuple[Signal, ...]) -> _Distances:
    return _Distances(signals)


def topsim(signals: Sequence[Signal]) -> float | None:
    """Topographic similarity: Spearman rho between meaning Hamming and message edit
    distances over all pairs of signals. 1 = similar meanings get similar messages; None with
    fewer than 2 signals or when either distance never changes."""
    if len(signals) < 2:
        return None
    distances = _distances(tuple(signals))
    return distances.rho(distances.message_index)


Metric = Callable[[Sequence[Signal]], float | None]


def shuffled_baseline(metric: Metric, signals: Sequence[Signal], shuffles: int = 20, seed: int = 0) -> float | None:
    """The mean of `metric` over `shuffles` shuffles (seeded) of the messages across the
    meanings: what the same messages score with no relation to the meanings, on this many
    signals. None when the metric is undefined on every shuffle.

    >>> shuffled_baseline(positional_disentanglement, signals)  # doctest: +SKIP
    """
    messages = [w for _, w in signals]
    rng = random.Random(seed)
    order = list(range(len(signals)))
    distances = _distances(tuple(signals)) if metric is topsim and len(signals) > 1 else None
    values = []
    for _ in range(shuffles):
        rng.shuffle(order)
        if distances is not None:  # the same permutations, without recomputing any edit distance
            value = distances.rho([distances.message_index[k] for k in order])
        else:
            value = metric([(m, messages[k]) for (m, _), k in zip(signals, order, strict=True)])
        if value is not None:
            values.append(value)
    return sum(values) / len(values) if values else None
