"""Every metric on hand-made episodes, with the expected values worked out in the test."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from multiagent_rl.analysis import (
    agent_message_stats,
    answer_adoption,
    debate_dynamics,
    debate_rounds,
    edge_message_stats,
    influence_graph,
    meaning_attributes,
    meaning_message_information,
    message_drift,
    message_stats_by_step,
    messages_before_after,
    messages_by_meaning,
    reward_by_step,
    role_specialisation,
    signalling_by_step,
    summarise_dynamics,
    topographic_similarity,
    training_phases,
)


def _h(*probabilities: float) -> float:
    return -sum(p * math.log2(p) for p in probabilities if p > 0)


# ----- messages per agent and per edge -----------------------------------------------------
def test_agent_and_edge_message_stats(episode):
    ep = episode([
        ("a", 0, "red red blue", None, ["b", "c"], 4),
        ("a", 1, "red green", None, ["b"], 2),
        ("b", 0, "ok", None, ["a"], 1),
    ], agents=["a", "b", "c"])
    stats = {row["agent"]: row for row in agent_message_stats([ep])}
    assert set(stats) == {"a", "b"}  # c never spoke
    a = stats["a"]
    assert a["messages"] == 2
    assert a["mean_chars"] == pytest.approx((12 + 9) / 2)
    assert a["mean_tokens"] == pytest.approx(3.0)
    assert a["mean_words"] == pytest.approx(2.5)
    assert a["distinct_1"] == pytest.approx(3 / 5)  # red, blue, green over 5 words
    assert a["distinct_2"] == pytest.approx(3 / 3)
    assert a["type_token_ratio"] == pytest.approx((2 / 3 + 2 / 2) / 2)
    assert a["entropy_bits"] == pytest.approx(_h(0.6, 0.2, 0.2))
    assert stats["b"]["entropy_bits"] == 0.0

    edges = {(r["sender"], r["receiver"]): r for r in edge_message_stats([ep])}
    assert set(edges) == {("a", "b"), ("a", "c"), ("b", "a")}
    assert edges["a", "b"]["messages"] == 2
    assert edges["a", "c"]["messages"] == 1 and edges["a", "c"]["mean_chars"] == 12
    assert edges["a", "c"]["distinct_1"] == pytest.approx(2 / 3)


def test_message_stats_by_step_groups_training_steps(episode):
    eps = [
        episode([("a", 0, "one two")], step=1, agents=["a", "b"]),
        episode([("a", 0, "one one one one")], step=2, agents=["a", "b"]),
        episode([("a", 0, "ignored because eval")], step=2, split="eval", agents=["a", "b"]),
    ]
    rows = message_stats_by_step(eps)
    assert [(r["step"], r["agent"], r["mean_words"]) for r in rows] == [(1, "a", 2.0), (2, "a", 4.0)]
    assert rows[1]["distinct_1"] == pytest.approx(1 / 4)


def test_training_phases_split_steps_in_thirds(episode):
    eps = [episode([("a", 0, str(s))], step=s) for s in (6, 1, 2, 3, 4, 5)]
    early, late = training_phases(eps)
    assert sorted(e.step for e in early) == [1, 2]
    assert sorted(e.step for e in late) == [5, 6]
    no_steps = [episode([("a", 0, str(i))]) for i in range(6)]
    early, late = training_phases(no_steps)
    assert early == no_steps[:2] and late == no_steps[-2:]


def test_message_drift_early_vs_late(episode):
    eps = [
        episode([("a", 0, "x x"), ("b", 0, "p")], step=1),
        episode([("a", 0, "y y y"), ("b", 0, "p q")], step=2),
        episode([("a", 0, "x y"), ("b", 0, "q")], step=3),
    ]
    drift = {r["agent"]: r for r in message_drift(eps)}
    # a: early {x: 1} vs late {x: .5, y: .5}; m = (.75, .25)
    divergence = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert drift["a"]["js_distance"] == pytest.approx(math.sqrt(divergence))
    assert drift["b"]["js_distance"] == pytest.approx(1.0)  # 'p' early, 'q' late
    assert drift["a"]["early_steps"] == "1-1" and drift["a"]["late_steps"] == "3-3"
    assert drift["a"]["early_mean_chars"] == 3 and drift["a"]["late_mean_chars"] == 3


def test_role_specialisation_pairwise(episode):
    eps = [episode([("a", 0, "x y"), ("b", 0, "x y"), ("c", 0, "z")])]
    pairs = {(r["agent_a"], r["agent_b"]): r["js_distance"] for r in role_specialisation(eps)}
    assert pairs == {("a", "b"): 0.0, ("a", "c"): pytest.approx(1.0), ("b", "c"): pytest.approx(1.0)}


# ----- debate dynamics ----------------------------------------------------------------------
def test_debate_dynamics_converging_episode(episode):
    ep = episode([
        ("a", 0, "3"), ("b", 0, "5"), ("c", 0, "4"),
        ("a", 1, "5"), ("b", 1, "5"), ("c", 1, "4"),
        ("a", 2, "5"), ("b", 2, "5"), ("c", 2, "5"),
    ], answer="5", team_answer="5", rewards={"a": 1.0, "b": 1.0, "c": 1.0})
    row = debate_dynamics([ep])[0]
    assert row["rounds"] == 3
    assert row["answer_changes"] == 2  # a: 3->5, c: 4->5
    assert row["convergence_round"] == 2
    assert row["flips_wrong_to_correct"] == 2 and row["flips_correct_to_wrong"] == 0
    assert row["last_round_unanimous"] is True
    assert row["majority_answer"] == "5" and row["majority_matches_team"] is True
    assert row["team_correct"] is True and row["team_reward"] == 1.0

    rounds = debate_rounds([ep])
    assert [(r["round"], r["with_previous"], r["changed"]) for r in rounds] == [(0, 0, 0), (1, 3, 1), (2, 3, 1)]
    assert rounds[0]["change_rate"] is None and rounds[1]["change_rate"] == pytest.approx(1 / 3)
    assert [r["accuracy"] for r in rounds] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [r["unanimous_rate"] for r in rounds] == [0.0, 0.0, 1.0]


def test_debate_dynamics_disagreement_and_judge(episode):
    # b flips off the right answer; the last round ties 5-6 (majority = first voter's 5),
    # while the team answer (say, a judge's) is 6.
    split = episode([("a", 0, "5"), ("b", 0, "5"), ("a", 1, "5"), ("b", 1, "6")], answer="5", team_answer="6")
    # agreement, a break, then the same agreement again: converged only from round 2
    regained = episode([("a", 0, "5"), ("b", 0, "5"), ("a", 1, "5"), ("b", 1, "6"), ("a", 2, "5"), ("b", 2, "5")],
                       answer="5", team_answer="5")
    no_reference = episode([("a", 0, "1"), ("a", 1, "2")], answer=None, team_answer="2")
    rows = debate_dynamics([split, regained, no_reference])
    assert rows[0]["convergence_round"] is None and rows[0]["last_round_unanimous"] is False
    assert rows[0]["flips_correct_to_wrong"] == 1 and rows[0]["flips_wrong_to_correct"] == 0
    assert rows[0]["majority_answer"] == "5" and rows[0]["majority_matches_team"] is False
    assert rows[0]["team_correct"] is False
    assert rows[1]["convergence_round"] == 2
    assert rows[1]["flips_correct_to_wrong"] == 1 and rows[1]["flips_wrong_to_correct"] == 1
    assert rows[2]["flips_wrong_to_correct"] is None and rows[2]["team_correct"] is None

    summary = summarise_dynamics(rows)
    assert summary["episodes"] == 3
    assert summary["team_accuracy"] == pytest.approx(1 / 2)  # no_reference is left out
    assert summary["last_round_agreement"] == pytest.approx(2 / 3)
    assert summary["converged"] == pytest.approx(2 / 3)
    assert summary["mean_convergence_round"] == pytest.approx((2 + 1) / 2)  # regained 2, no_reference 1
    assert summary["majority_team_agreement"] == pytest.approx(2 / 3)


def test_answers_compare_by_value(episode):
    ep = episode([("a", 0, "x", "1,200"), ("a", 1, "y", "1200.0")], answer="1200", team_answer="1200")
    row = debate_dynamics([ep])[0]
    assert row["answer_changes"] == 0 and row["team_correct"] is True


# ----- influence by adoption ------------------------------------------------------------------
def test_answer_adoption_by_hand(episode):
    first = episode([("a", 0, "3"), ("b", 0, "5"), ("a", 1, "5"), ("b", 1, "5")])
    # a adopted b's 5 (it said 3 before); b kept its 5 and ignored a's 3.
    table = {(r["sender"], r["receiver"]): r for r in answer_adoption([first])}
    assert table["b", "a"]["opportunities"] == 1 and table["b", "a"]["adoptions"] == 1
    assert table["a", "b"]["opportunities"] == 1 and table["a", "b"]["adoptions"] == 0

    second = episode([("a", 0, "3"), ("b", 0, "5"), ("a", 1, "3"), ("b", 1, "3")])
    # a message that reached nobody is no chance to adopt; a's own answer is not a proposal
    third = episode([("a", 0, "7", "7", []), ("b", 0, "5", "5", []), ("a", 1, "5"), ("b", 1, "5")])
    table = {(r["sender"], r["receiver"]): r for r in answer_adoption([first, second, third])}
    assert (table["b", "a"]["opportunities"], table["b", "a"]["adoptions"]) == (2, 1)
    assert (table["a", "b"]["opportunities"], table["a", "b"]["adoptions"]) == (2, 1)
    assert table["a", "b"]["adoption_rate"] == 0.5

    graph = influence_graph(answer_adoption([first]), agents=["a", "b", "c"])
    assert set(graph.nodes) == {"a", "b", "c"}
    assert graph["b"]["a"]["weight"] == 1.0 and graph["a"]["b"]["weight"] == 0.0
    assert graph["b"]["a"]["opportunities"] == 1
    with pytest.raises(KeyError, match="no column 'nope'"):
        influence_graph(answer_adoption([first]), weight="nope")


def test_a_judge_choosing_a_solver_counts_as_adoption(episode):
    ep = episode([("s1", 0, "4", "4", ["judge"]), ("s2", 0, "6", "6", ["judge"]), ("judge", 1, "6", "6", [])])
    table = {(r["sender"], r["receiver"]): r["adoption_rate"] for r in answer_adoption([ep])}
    assert table == {("s1", "judge"): 0.0, ("s2", "judge"): 1.0}


# ----- signalling -----------------------------------------------------------------------------
def _signals(episode, codes):
    meanings = [("red", "square"), ("red", "circle"), ("blue", "square"), ("blue", "circle")]
    return [
        episode([("speaker", 0, code, None, ["listener"]), ("listener", 1, "guess", None, [])],
                meta={"colour": c, "shape": s})
        for (c, s), code in zip(meanings, codes, strict=True)
    ]


def test_topographic_similarity_compositional_code(episode):
    eps = _signals(episode, ["ra sq", "ra ci", "bl sq", "bl ci"])
    row = topographic_similarity(eps, agent="speaker")[0]
    # meaning and message distances are the same 6 numbers (1, 1, 2, 2, 1, 1): rho = 1
    assert row["pairs"] == 6 and row["attributes"] == "colour,shape"
    assert row["topographic_similarity"] == pytest.approx(1.0)
    info = meaning_message_information(eps, agent="speaker")[0]
    assert info["mutual_information_bits"] == pytest.approx(2.0)
    assert info["meaning_entropy_bits"] == pytest.approx(2.0) and info["normalised_mi"] == pytest.approx(1.0)


def test_topographic_similarity_holistic_and_partial_codes(episode):
    holistic = _signals(episode, ["a", "b", "c", "d"])  # every message 1 edit from every other
    assert topographic_similarity(holistic, agent="speaker")[0]["topographic_similarity"] is None
    colour_only = _signals(episode, ["r", "r", "b", "b"])
    # meaning distances (rs-rc, rs-bs, rs-bc, rc-bs, rc-bc, bs-bc) = 1 1 2 2 1 1, message 0 1 1 1 1 0
    # ranks: meanings (2.5 2.5 5.5 5.5 2.5 2.5), messages (1.5 4.5 4.5 4.5 4.5 1.5)
    expected = 6 / math.sqrt(12 * 12)  # centred: (-1,-1,2,2,-1,-1) . (-2,1,1,1,1,-2) / norms
    row = topographic_similarity(colour_only, agent="speaker")[0]
    assert row["topographic_similarity"] == pytest.approx(expected)
    info = meaning_message_information(colour_only, agent="speaker")[0]
    assert info["mutual_information_bits"] == pytest.approx(1.0) and info["normalised_mi"] == pytest.approx(0.5)
    # every agent gets a row by default
    assert [r["agent"] for r in topographic_similarity(colour_only)] == ["speaker", "listener"]


def test_signalling_without_meanings_says_what_to_pass(episode):
    with pytest.raises(ValueError, match="attributes"):
        topographic_similarity([episode([("a", 0, "x")])])


MEANINGS = [("red", "square"), ("red", "circle"), ("blue", "square"), ("blue", "circle")]
CODE = {m: f"{m[0][:2]} {m[1][:2]}" for m in MEANINGS}  # "re sq", ...: compositional


def _talk(episode, messages, step=None, split="train", keys=None):
    """One speaker->listener episode per message, meanings cycling through MEANINGS."""
    out = []
    for i, text in enumerate(messages):
        colour, shape = MEANINGS[i % 4]
        ep = episode([("speaker", 0, text, None, ["listener"]), ("listener", 1, f"{colour} {shape}", None, [])],
                     meta={"target": {"colour": colour, "shape": shape}, "listener_order": ["x", f"{colour} {shape}"]},
                     step=step, split=split, answer=f"{colour} {shape}",
                     team_answer=f"{colour} {shape}" if text == CODE[(colour, shape)] else None)
        if keys is not None:
            ep.task.key = keys[i]
        out.append(ep)
    return out


def test_adjusted_information_discounts_the_small_sample_bias(episode):
    # every message different: plug-in MI is the whole H(meaning), none of it above chance
    unique = meaning_message_information(_talk(episode, [f"word{i}" for i in range(8)]), agent="speaker")[0]
    assert unique["mutual_information_bits"] == pytest.approx(2.0) == unique["shuffled_mi_bits"]
    assert unique["adjusted_mi_bits"] == pytest.approx(0.0) and unique["adjusted_normalised_mi"] is None
    # a code that names the meaning: everything above chance is explained
    coded = [CODE[MEANINGS[i % 4]] for i in range(20)]
    info = meaning_message_information(_talk(episode, coded), agent="speaker")[0]
    assert info["mutual_information_bits"] == pytest.approx(2.0) and info["shuffled_mi_bits"] < 1.0
    assert info["adjusted_normalised_mi"] == pytest.approx(1.0)
    # two words used regardless of the meaning: about nothing above chance
    noise = meaning_message_information(_talk(episode, ["a"] * 10 + ["b"] * 10), agent="speaker")[0]
    assert noise["mutual_information_bits"] > 0 and abs(noise["adjusted_normalised_mi"]) < 0.1


def test_signalling_by_step_shows_a_code_forming(episode):
    eps = (_talk(episode, ["the target is"] * 8, step=1) + _talk(episode, ["the target is"] * 4 + [CODE[m] for m in MEANINGS], step=2)
           + _talk(episode, [CODE[MEANINGS[i % 4]] for i in range(8)], step=3))
    rows = {r["step"]: r for r in signalling_by_step(eps, agent="speaker")}
    assert sorted(rows) == [1, 2, 3] and {r["split"] for r in rows.values()} == {"train"}
    assert rows[1]["topographic_similarity"] is None  # one message for every meaning
    assert rows[1]["mutual_information_bits"] == 0.0 and rows[1]["adjusted_normalised_mi"] == pytest.approx(0.0)
    assert rows[3]["topographic_similarity"] == pytest.approx(1.0) and rows[3]["adjusted_normalised_mi"] == pytest.approx(1.0)
    assert 0 < rows[2]["mutual_information_bits"] < rows[3]["mutual_information_bits"]
    assert [r["step"] for r in signalling_by_step(eps, agent="speaker", bins=2)] == [1, 3]  # bins of equal step width
    # held-out evaluations are their own rows, one per evaluated step
    held_out = _talk(episode, ["the target is"] * 4, step=0, split="eval") + _talk(episode, [CODE[m] for m in MEANINGS], step=3, split="eval")
    evals = signalling_by_step(eps + held_out, agent="speaker", split="eval")
    assert [(r["split"], r["step"], r["episodes"]) for r in evals] == [("eval", 0, 4), ("eval", 3, 4)]
    assert signalling_by_step([], agent="speaker").to_records() == []


def test_messages_side_by_side_early_late_and_before_after(episode):
    early = _talk(episode, ["the target is"] * 7 + ["red?"], step=1)
    late = _talk(episode, [CODE[MEANINGS[i % 4]] for i in range(8)], step=3)
    middle = _talk(episode, ["?"] * 4, step=2)
    table = {r["meaning"]: r for r in messages_by_meaning(early + middle + late)}
    assert set(table) == {"red square", "red circle", "blue square", "blue circle"}
    row = table["blue square"]
    assert row["agent"] == "speaker" and row["early_episodes"] == 2 and row["late_episodes"] == 2
    assert row["early"] == "“the target is” ×2" and row["late"] == "“bl sq” ×2"
    assert table["blue circle"]["early"] == "“red?” ×1 · “the target is” ×1"  # ties: alphabetical
    # the same held-out tasks at the first and the last evaluation
    keys = [f"task{i}" for i in range(4)]
    before = _talk(episode, ["the target is"] * 4, step=0, split="eval", keys=keys)
    after = _talk(episode, [CODE[m] for m in MEANINGS], step=3, split="eval", keys=keys[::-1])
    pairs = messages_before_after(early + before + after)
    assert len(pairs) == 4 and {r["before_step"] for r in pairs} == {0} and {r["after_step"] for r in pairs} == {3}
    first = pairs[0]  # task0: red square before; after, task0 is the fourth episode's (blue circle)
    assert (first["target"], first["before"], first["before_right"]) == ("red square", "the target is", False)
    assert (first["after"], first["after_right"]) == ("bl ci", True)
    assert messages_before_after(early + before).to_records() == []  # one evaluation: nothing to pair


# ----- rewards --------------------------------------------------------------------------------
def test_reward_by_step_from_episodes_then_metrics(episode):
    eps = [
        episode([("a", 0, "1")], step=1, rewards={"a": 1.0, "b": 0.0}, agents=["a", "b"]),
        episode([("a", 0, "1")], step=1, rewards={"a": 0.0, "b": 0.0}, agents=["a", "b"]),
        episode([("a", 0, "1")], step=2, rewards={"a": 1.0, "b": 1.0}, agents=["a", "b"]),
    ]
    metrics = [{"step": 1, "eval/team_reward_mean": 0.25}, {"step": 2, "reward/team_mean": 9.0}]
    rows = reward_by_step(eps, metrics)
    train = [(r["step"], r["team_reward"]) for r in rows if r["split"] == "train"]
    assert train == [(1, pytest.approx(0.25)), (2, 1.0)]  # episodes win over metrics for train
    assert [(r["step"], r["team_reward"], r["source"]) for r in rows if r["split"] == "eval"] == [(1, 0.25, "metrics")]


def test_meaning_attributes_follow_the_signalling_meta(episode):
    import random

    from multiagent_rl import load_scenario

    scenario = load_scenario("signalling")
    rng = random.Random(0)
    tasks = [scenario.sample_task(rng) for _ in range(4)]
    eps = [episode([("speaker", 0, t.meta["target"]["colour"], None, ["listener"])], meta=t.meta) for t in tasks]
    # the target's fields, not the candidate lists or the listener's numbering
    assert meaning_attributes(eps) == ["target.colour", "target.shape"]
    flat = [episode([("a", 0, "x")], meta={"colour": "red", "shape": "star", "seen": [1, 2], "n": 3})]
    assert meaning_attributes(flat) == ["colour", "shape", "n"]
    # a speaker naming only the colour: I(meaning; message) = H(colour)
    info = meaning_message_information(eps, agent="speaker")[0]
    colours = Counter(t.meta["target"]["colour"] for t in tasks)
    assert info["mutual_information_bits"] == pytest.approx(_h(*(c / 4 for c in colours.values())))
