"""Small text statistics on tokenised messages: words, distinct-n, entropy, distances, ranks.

Messages are tokenised into *words*: lower-cased runs of letters, digits and underscores
(punctuation and markup are dropped, so ``<answer>7</answer>`` is ``answer 7 answer``).
All logarithms are base 2 (bits).

>>> words("Mia has 12 coins, so: 19!")
('mia', 'has', '12', 'coins', 'so', '19')
>>> distinct_n([("a", "b", "a")], 1), entropy_bits({"a": 2, "b": 2})
(0.6666666666666666, 1.0)
>>> edit_distance(("red", "square"), ("blue", "square"))
1
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@lru_cache(maxsize=262_144)  # logs repeat messages a lot; every metric tokenises the same texts
def words(text: str) -> tuple[str, ...]:
    """The message's words, lower-cased, in order."""
    return tuple(_WORD.findall(text.lower()))


@lru_cache(maxsize=262_144)
def message_features(text: str) -> tuple[int, tuple[str, ...], frozenset, int, float | None]:
    """(chars, words, distinct bigrams, bigram count, type/token ratio) of one message, cached."""
    w = words(text)
    bigrams = frozenset(zip(w, w[1:], strict=False))
    return len(text), w, bigrams, max(0, len(w) - 1), (len(set(w)) / len(w) if w else None)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(messages: Iterable[Sequence[str]], n: int) -> float | None:
    """Distinct n-grams over all n-grams of a set of messages (n-grams never cross messages).

    None when the messages hold no n-gram at all.
    """
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in messages:
        grams = ngrams(tokens, n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def type_token_ratio(tokens: Sequence[str]) -> float | None:
    """Distinct words / words of one message; None for an empty message."""
    return len(set(tokens)) / len(tokens) if tokens else None


def entropy_bits(counts: Mapping[Hashable, float]) -> float:
    """Shannon entropy (bits) of the distribution proportional to `counts`."""
    total = float(sum(counts.values()))
    if total <= 0:
        return 0.0
    h = 0.0
    for c in counts.values():
        if c > 0:
            p = c / total
            h -= p * math.log2(p)
    return h


def js_distance(p: Mapping[Hashable, float], q: Mapping[Hashable, float]) -> float | None:
    """Jensen-Shannon distance (square root of the base-2 JS divergence, in [0, 1]).

    Identical distributions give 0, disjoint supports give 1; None if either is empty.
    """
    sp, sq = float(sum(p.values())), float(sum(q.values()))
    if sp <= 0 or sq <= 0:
        return None
    divergence = 0.0
    for key in set(p) | set(q):
        a, b = p.get(key, 0) / sp, q.get(key, 0) / sq
        m = (a + b) / 2
        if a > 0:
            divergence += 0.5 * a * math.log2(a / m)
        if b > 0:
            divergence += 0.5 * b * math.log2(b / m)
    return math.sqrt(max(0.0, min(1.0, divergence)))


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences (insert, delete, substitute cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def hamming(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Number of positions where two equal-length tuples differ."""
    if len(a) != len(b):
        raise ValueError(f"hamming distance needs equal lengths, got {len(a)} and {len(b)}")
    return sum(x != y for x, y in zip(a, b, strict=True))


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as Spearman's rho needs)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=float)
    # Runs of equal values get the mean of the positions they span.
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation; None when undefined (fewer than 2 points or a constant side)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if denominator == 0:
        return None
    return float((rx * ry).sum()) / denominator


def mutual_information_bits(pairs: Iterable[tuple[Hashable, Hashable]]) -> tuple[float, float, float]:
    """Plug-in estimate of I(X; Y) from observed (x, y) pairs: (I, H(X), H(Y)), in bits."""
    joint = Counter(pairs)
    xs: Counter = Counter()
    ys: Counter = Counter()
    for (x, y), c in joint.items():
        xs[x] += c
        ys[y] += c
    hx, hy, hxy = entropy_bits(xs), entropy_bits(ys), entropy_bits(joint)
    return max(0.0, hx + hy - hxy), hx, hy


@lru_cache(maxsize=65_536)
def answer_key(answer: str | None) -> str | None:
    """A comparable form of an answer: trimmed, lower-case, single spaces, numbers by value
    ("1,200" and "1200.0" -> "1200"), as `answers_match` compares them."""
    if answer is None:
        return None
    text = " ".join(str(answer).strip().lower().split())
    compact = text.replace(",", "")
    if _NUMBER.fullmatch(compact):
        value = float(compact)
        return str(int(value)) if value.is_integer() else repr(value)
    return text
