"""Text statistics and the Table type, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiagent_rl.analysis import Table
from multiagent_rl.analysis.textstats import (
    answer_key,
    average_ranks,
    distinct_n,
    edit_distance,
    entropy_bits,
    hamming,
    js_distance,
    mutual_information_bits,
    spearman,
    type_token_ratio,
    words,
)


def test_words_are_lowercase_alphanumeric_runs():
    assert words("I think <answer>7</answer>, Mia!") == ("i", "think", "answer", "7", "answer", "mia")
    assert words("") == ()


def test_distinct_n_counts_ngrams_within_messages_only():
    messages = [("red", "red", "blue"), ("red", "green")]
    assert distinct_n(messages, 1) == pytest.approx(3 / 5)
    # bigrams: (red, red), (red, blue), (red, green); none spans the two messages
    assert distinct_n(messages, 2) == pytest.approx(3 / 3)
    assert distinct_n([("a",)], 2) is None
    assert type_token_ratio(("a", "a", "b", "c")) == pytest.approx(3 / 4)
    assert type_token_ratio(()) is None


def test_entropy_in_bits():
    assert entropy_bits({"a": 1}) == 0.0
    assert entropy_bits({"a": 1, "b": 1, "c": 1, "d": 1}) == pytest.approx(2.0)
    expected = -(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2))
    assert entropy_bits({"red": 3, "blue": 1, "green": 1}) == pytest.approx(expected)
    assert entropy_bits({}) == 0.0


def test_js_distance_by_hand():
    assert js_distance({"x": 2}, {"x": 5}) == 0.0
    assert js_distance({"x": 1}, {"y": 1}) == pytest.approx(1.0)
    # p = (1, 0), q = (.5, .5), m = (.75, .25)
    divergence = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert js_distance({"x": 2}, {"x": 1, "y": 1}) == pytest.approx(math.sqrt(divergence))
    assert js_distance({}, {"x": 1}) is None


def test_edit_and_hamming_distances():
    assert edit_distance(("red", "square"), ("blue", "square")) == 1
    assert edit_distance(("a", "b", "c"), ()) == 3
    assert edit_distance("kitten", "sitting") == 3
    assert hamming(("red", "square"), ("red", "circle")) == 1
    with pytest.raises(ValueError, match="equal lengths"):
        hamming(("a",), ("a", "b"))


def test_spearman_by_hand():
    # no ties: rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share ranks: x ranks (1.5, 1.5, 3) against (1, 2, 3): 1.5 / sqrt(1.5 * 2)
    assert list(average_ranks([1, 1, 2])) == [1.5, 1.5, 3.0]
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1], [2]) is None


def test_mutual_information_plug_in():
    one_to_one = [("m1", "a"), ("m2", "b"), ("m3", "c"), ("m4", "d")]
    assert mutual_information_bits(one_to_one) == pytest.approx((2.0, 2.0, 2.0))
    constant = [("m1", "x"), ("m2", "x")]
    assert mutual_information_bits(constant) == pytest.approx((0.0, 1.0, 0.0))
    # messages say only the colour: I = H(colour) = 1 bit out of H(meaning) = 2 bits
    colour_only = [(("red", "sq"), "r"), (("red", "ci"), "r"), (("blue", "sq"), "b"), (("blue", "ci"), "b")]
    assert mutual_information_bits(colour_only)[0] == pytest.approx(1.0)


def test_answer_key_compares_like_answers_match():
    assert answer_key(" Blue  Square ") == "blue square"
    assert answer_key("1,200") == answer_key("1200.0") == "1200"
    assert answer_key("-3") == "-3"
    assert answer_key(None) is None


@given(st.lists(st.text(alphabet="ab", max_size=4), max_size=5), st.lists(st.text(alphabet="ab", max_size=4), max_size=5))
def test_edit_distance_is_a_metric(a, b):
    assert edit_distance(a, b) == edit_distance(b, a)
    assert (edit_distance(a, b) == 0) == (a == b)
    assert abs(len(a) - len(b)) <= edit_distance(a, b) <= max(len(a), len(b))


def test_table_is_a_list_of_dicts_with_columns():
    t = Table([{"agent": "a", "n": 3}, {"agent": "b", "n": None}], ["agent", "n"])
    assert isinstance(t, list) and t[0] == {"agent": "a", "n": 3}
    assert t.column("n") == [3, None]
    assert t.where(agent="b").to_records() == [{"agent": "b", "n": None}]
    assert t.to_text().splitlines() == ["agent  n", "-----  -", "a      3", "b      –"]
    assert "<td class=\"num\">3</td>" in t.to_html()
    with pytest.raises(KeyError, match="no column 'x'"):
        t.column("x")


def test_table_html_escapes_text():
    html = Table([{"text": "<script>alert(1)</script> see http://x.example"}]).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html


def test_table_loads_into_pandas():
    pandas = pytest.importorskip("pandas", reason="pandas is optional; install it to check the DataFrame round trip")
    t = Table([{"agent": "a", "n": 3}, {"agent": "b", "n": 1}])
    frame = pandas.DataFrame(t)
    assert list(frame.columns) == ["agent", "n"] and frame["n"].sum() == 4
    assert pandas.DataFrame.from_records(t.to_records()).shape == (2, 2)
