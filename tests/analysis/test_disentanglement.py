"""posdis, bosdis and their shuffled baselines on hand-made codes, and the tables that carry them."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from multiagent_rl.analysis import (
    bag_of_symbols_disentanglement,
    lexicon,
    positional_disentanglement,
    shuffled_baseline,
    signalling_by_step,
    topsim,
)
from multiagent_rl.analysis.textstats import mutual_information_bits

MEANINGS = list(itertools.product(range(4), range(4)))  # 2 attributes x 4 values
COLOURS, SHAPES = ["red", "blue", "green", "pink"], ["circle", "square", "star", "heart"]


def compositional(repeats: int = 5) -> list:
    """Position 0 names the first attribute, position 1 the second, with their own symbols."""
    return [((a, b), (f"a{a}", f"b{b}")) for a, b in MEANINGS] * repeats


def holistic(repeats: int = 5, seed: int = 0) -> list:
    """Each meaning a distinct 2-symbol message from one 4-symbol alphabet, paired at random."""
    messages = [(f"s{x}", f"s{y}") for x, y in itertools.product(range(4), range(4))]
    random.Random(seed).shuffle(messages)
    return list(zip(MEANINGS, messages, strict=True)) * repeats


def egg_gap(signals, variables) -> float | None:
    """EGG's gap_mi_first_second, written out plainly: the reference the fast code must match."""
    attributes = list(zip(*(m for m, _ in signals), strict=True))
    gaps = []
    for variable in variables:
        mi = sorted((mutual_information_bits(zip(a, variable, strict=True))[0] for a in attributes), reverse=True)
        h = mutual_information_bits(zip(variable, variable, strict=True))[1]
        if h > 0:
            gaps.append((mi[0] - mi[1]) / h)
    return sum(gaps) / len(gaps) if gaps else None


def test_a_compositional_code_scores_one_everywhere():
    code = compositional()
    assert positional_disentanglement(code) == pytest.approx(1.0, abs=1e-9)
    assert bag_of_symbols_disentanglement(code) == pytest.approx(1.0, abs=1e-9)
    assert topsim(code) == pytest.approx(1.0, abs=1e-9)


def test_holistic_and_constant_codes():
    code = holistic()
    assert positional_disentanglement(code) < 0.5 and bag_of_symbols_disentanglement(code) < 0.5
    # 2 x 2 meanings, one symbol each: the symbol tells both attributes equally, no gap at all
    whole = [((a, b), (f"w{2 * a + b}",)) for a, b in itertools.product(range(2), range(2))]
    assert positional_disentanglement(whole) == pytest.approx(0.0, abs=1e-12)
    assert bag_of_symbols_disentanglement(whole) == pytest.approx(0.0, abs=1e-12)
    constant = [(m, ("x", "y")) for m in MEANINGS]
    assert positional_disentanglement(constant) is None and bag_of_symbols_disentanglement(constant) is None
    assert positional_disentanglement([]) is None and topsim(constant[:1]) is None


def test_matches_the_egg_formula_on_ragged_messages():
    rng = random.Random(3)
    signals = [((rng.randrange(3), rng.randrange(2), rng.randrange(4)),
                tuple(rng.choice("abcd") for _ in range(rng.randrange(1, 4)))) for _ in range(60)]
    longest = max(len(w) for _, w in signals)
    positions = [[w[j] if j < len(w) else None for _, w in signals] for j in range(longest)]
    counts = [[Counter(w)[s] for _, w in signals] for s in "abcd"]
    assert positional_disentanglement(signals) == pytest.approx(egg_gap(signals, positions), abs=1e-12)
    assert bag_of_symbols_disentanglement(signals) == pytest.approx(egg_gap(signals, counts), abs=1e-12)


def test_shuffled_baseline_is_what_chance_gives():
    code = compositional(repeats=20)  # 320 signals
    for metric in (positional_disentanglement, bag_of_symbols_disentanglement, topsim):
        chance = shuffled_baseline(metric, code, shuffles=10, seed=1)
        assert chance is not None and abs(chance) < 0.3
    # topsim's shuffles re-pair distances computed once: the same numbers as shuffling afresh
    small = holistic(repeats=2)
    assert shuffled_baseline(topsim, small, shuffles=5, seed=2) == pytest.approx(
        shuffled_baseline(lambda s: topsim(s), small, shuffles=5, seed=2))
    assert shuffled_baseline(positional_disentanglement, [(m, ("x",)) for m in MEANINGS]) is None


def _episodes(episode, code, step, repeats=2, split="train"):
    """speaker -> listener episodes over every meaning, the speaker saying code(meaning)."""
    return [
        episode([("speaker", 0, code(c, s), None, ["listener"]),
                 ("listener", 1, f"{COLOURS[c]} {SHAPES[s]}", None, [])],
                meta={"target": {"colour": COLOURS[c], "shape": SHAPES[s]}}, step=step, split=split)
        for c, s in MEANINGS * repeats
    ]


def words_for(c, s):
    return f"{COLOURS[c][:2]} {SHAPES[s][:2]}"


def test_signalling_by_step_appends_the_new_columns(episode):
    eps = _episodes(episode, lambda c, s: "the target is", step=1) + _episodes(episode, words_for, step=2)
    table = signalling_by_step(eps, agent="speaker")
    new = ["topographic_similarity_shuffled", "posdis", "posdis_shuffled", "bosdis", "bosdis_shuffled"]
    assert table.columns[-5:] == new  # appended: the old columns keep their places
    assert table.columns[:5] == ["split", "step", "agent", "episodes", "topographic_similarity"]
    rows = {r["step"]: r for r in table}
    assert rows[1]["posdis"] is None and rows[1]["bosdis_shuffled"] is None  # one message for every meaning
    late = rows[2]
    assert late["posdis"] == pytest.approx(1.0) and late["bosdis"] == pytest.approx(1.0)
    assert late["topographic_similarity"] == pytest.approx(1.0)
    assert late["posdis_shuffled"] < 0.5 and late["bosdis_shuffled"] < 0.5
    assert abs(late["topographic_similarity_shuffled"]) < 0.3
    assert signalling_by_step([], agent="speaker").columns[-5:] == new


def test_lexicon_reads_a_compositional_code_as_a_word_list(episode):
    eps = (_episodes(episode, lambda c, s: "the target is", step=1) + _episodes(episode, words_for, step=2)
           + _episodes(episode, words_for, step=3))
    late = lexicon(eps)
    assert {r["phase"] for r in late} == {"late"} and {r["agent"] for r in late} == {"speaker"}
    colour = {r["value"]: (r["symbol"], r["share"]) for r in late.where(attribute="target.colour", position=0)}
    shape = {r["value"]: (r["symbol"], r["share"]) for r in late.where(attribute="target.shape", position=1)}
    assert colour == {c: (c[:2], 1.0) for c in COLOURS} and shape == {s: (s[:2], 1.0) for s in SHAPES}
    # the other position says nothing about the attribute: the top symbol has a quarter of the episodes
    assert {r["share"] for r in late.where(attribute="target.colour", position=1)} == {0.25}
    early = lexicon(eps, phase="early", positions=5)
    assert {r["position"] for r in early} == {0, 1, 2}  # "the target is": three positions
    assert {(r["symbol"], r["share"]) for r in early.where(position=0)} == {("the", 1.0)}
    with pytest.raises(ValueError, match="phase"):
        lexicon(eps, phase="middle")
