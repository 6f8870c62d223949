"""Tests for multiagent_rl.graph: builders, validation, per-round graphs, routing, inboxes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import permutations

import networkx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiagent_rl.graph import (
    VISIBILITY,
    GraphError,
    InboxItem,
    MessageGraph,
    chain,
    complete,
    deliveries,
    from_edges,
    graph_for_round,
    inbox,
    ring,
    star,
)


@dataclass
class Msg:
    """Stand-in for records.Message: only the attributes inbox() reads."""

    sender: str
    receivers: list[str]
    round: int
    text: str
    answer: str | None = None
    visibility: dict[str, str] = field(default_factory=dict)


@dataclass
class BareMsg:
    """A message type with no visibility attribute at all (means every receiver sees it in full)."""

    sender: str
    receivers: list[str]
    round: int
    text: str
    answer: str | None = None


ABC = ["a", "b", "c"]


# --- builders ---------------------------------------------------------------------------------


def test_complete_is_every_ordered_pair_and_cyclic():
    g = complete(ABC)
    assert g.agents == ABC
    assert sorted(g.edges) == sorted(permutations(ABC, 2))
    assert not networkx.is_directed_acyclic_graph(g.nx)
    assert all(vis == "full" for _, vis in deliveries(g, "a"))


def test_chain_is_a_pipeline():
    g = chain(["a", "b", "c", "d"])
    assert g.edges == [("a", "b"), ("b", "c"), ("c", "d")]
    assert g.receivers("d") == []
    assert g.senders("a") == []


def test_ring_closes_the_chain():
    g = ring(ABC)
    assert g.edges == [("a", "b"), ("b", "c"), ("c", "a")]
    assert networkx.find_cycle(g.nx)
    assert ring(["a", "b"]).edges == [("a", "b"), ("b", "a")]


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("out", [("hub", "x"), ("hub", "y")]),
        ("in", [("x", "hub"), ("y", "hub")]),
        ("both", [("hub", "x"), ("x", "hub"), ("hub", "y"), ("y", "hub")]),
    ],
)
def test_star_directions(direction, expected):
    g = star("hub", ["x", "y"], direction=direction)
    assert g.agents == ["hub", "x", "y"]
    assert sorted(g.edges) == sorted(expected)


def test_builders_apply_visibility_to_every_edge():
    for g in (
        complete(ABC, visibility="answer"),
        chain(ABC, visibility="answer"),
        ring(ABC, visibility="answer"),
        star("a", ["b", "c"], visibility="answer"),
        from_edges([("a", "b"), ("b", "c")], visibility="answer"),
    ):
        assert {e["visibility"] for e in g.to_edge_list()} == {"answer"}


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: complete(["a"]), "at least 2 agents"),
        (lambda: chain([]), "at least 2 agents"),
        (lambda: ring(["solo"]), "at least 2 agents"),
        (lambda: star("hub", []), "at least 1 agents"),
        (lambda: complete(["a", "b", "a"]), "duplicate agent name 'a'"),
        (lambda: star("hub", ["x", "hub"]), "duplicate agent name 'hub'"),
        (lambda: star("hub", ["x"], direction="sideways"), "'sideways'.*'out', 'in', 'both'"),
        (lambda: complete("abc"), "not the string 'abc'"),
        (lambda: chain(["a", 2]), "got 2 \\(int\\)"),
        (lambda: complete(ABC, visibility="partial"), "'partial'.*'full', 'answer'"),
    ],
)
def test_builder_errors_name_the_problem(build, match):
    with pytest.raises(GraphError, match=match):
        build()


def test_from_edges_with_per_edge_visibility_and_isolated_agents():
    g = from_edges([("a", "b"), ("b", "a", {"visibility": "answer"})], agents=ABC)
    assert g.agents == ABC  # agents fixes the order and adds the isolated 'c'
    assert g.visibility("a", "b") == "full"
    assert g.visibility("b", "a") == "answer"
    assert g.receivers("c") == []


def test_from_edges_rejects_edges_outside_agents_and_bad_tuples():
    with pytest.raises(GraphError, match="unknown agent 'z'"):
        from_edges([("a", "z")], agents=ABC)
    with pytest.raises(GraphError, match="bad edge"):
        from_edges([("a",)])


def test_edge_list_is_json_and_round_trips():
    g = from_edges([("a", "b"), ("c", "a", {"visibility": "answer"})])
    data = json.loads(json.dumps(g.to_edge_list()))
    assert data == [
        {"source": "a", "target": "b", "visibility": "full"},
        {"source": "c", "target": "a", "visibility": "answer"},
    ]
    assert from_edges(data) == g


# --- MessageGraph -------------------------------------------------------------------------------


def test_wraps_networkx_graph_by_copy_with_default_visibility():
    raw = networkx.DiGraph([("a", "b")])
    g = MessageGraph(raw, agents=["c"])
    raw.add_edge("b", "a")  # the caller's later edits must not reroute the MessageGraph
    assert g.edges == [("a", "b")]
    assert g.agents == ["a", "b", "c"]
    assert g.visibility("a", "b") == "full"
    assert "visibility" not in raw.edges["a", "b"]
    with pytest.raises(networkx.NetworkXError):
        g.nx.add_edge("c", "a")  # frozen: a graph is a value shared across episodes


def test_undirected_graph_means_both_directions():
    g = MessageGraph(networkx.Graph([("a", "b")]))
    assert sorted(g.edges) == [("a", "b"), ("b", "a")]


def test_bad_visibility_error_names_edge_and_value():
    raw = networkx.DiGraph()
    raw.add_edge("a", "b", visibility="summary")
    with pytest.raises(GraphError, match=r"edge \('a', 'b'\) has visibility 'summary'.*'full'"):
        MessageGraph(raw)
    with pytest.raises(GraphError, match="'summary'"):
        from_edges([("a", "b", {"visibility": "summary"})])


def test_self_loop_rejected():
    with pytest.raises(GraphError, match=r"self-loop \('a', 'a'\)"):
        MessageGraph(networkx.DiGraph([("a", "b"), ("a", "a")]))
    with pytest.raises(GraphError, match="self-loop"):
        from_edges([("b", "b")])


def test_non_graph_and_multigraph_rejected():
    with pytest.raises(GraphError, match="got list"):
        MessageGraph([("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="got MultiDiGraph"):
        MessageGraph(networkx.MultiDiGraph([("a", "b")]))


def test_validate_names_the_unknown_agent():
    g = from_edges([("a", "b"), ("a", "x")])
    g.validate(["a", "b", "x"])
    with pytest.raises(GraphError) as err:
        g.validate(ABC)
    assert str(err.value) == "edge ('a', 'x') names unknown agent 'x'; known agents: a, b, c"
    with pytest.raises(GraphError, match="unknown agent 'typo'"):
        MessageGraph(agents=["a", "typo"]).validate(["a"])


def test_lookups_on_unknown_agents_and_missing_edges():
    g = chain(ABC)
    with pytest.raises(GraphError, match="unknown agent 'z'; known agents: a, b, c"):
        g.receivers("z")
    with pytest.raises(GraphError, match="unknown agent 'z'"):
        g.senders("z")
    with pytest.raises(GraphError, match=r"no edge \('c', 'a'\); 'c' sends to: \(nobody\)"):
        g.visibility("c", "a")
    assert deliveries(g, "z") == []  # absent from this round's graph: sits the round out


def test_equality_and_repr():
    assert complete(ABC) == from_edges(permutations(ABC, 2))
    assert complete(ABC) != complete(ABC, visibility="answer")
    assert chain(ABC) != chain(["a", "b", "c", "d"])
    assert chain(ABC) != "not a graph"
    assert repr(chain(ABC, visibility="answer")) == (
        "MessageGraph(3 agents, 2 edges: a->b[answer], b->c[answer])"
    )
    assert repr(complete(ABC)).endswith(", c->b)")
    assert repr(complete(list("abcd"))).endswith(", ...)")


# --- per-round graphs ---------------------------------------------------------------------------


def test_graph_for_round_static_and_function():
    static = ring(ABC)
    assert graph_for_round(static, 0) is static
    assert graph_for_round(static, 7) is static

    def schedule(r: int) -> MessageGraph:
        # round 0: the lead briefs everyone; later rounds: open debate
        return star("a", ["b", "c"], direction="out") if r == 0 else complete(ABC)

    assert graph_for_round(schedule, 0).edges == [("a", "b"), ("a", "c")]
    assert graph_for_round(schedule, 1) == complete(ABC)
    assert deliveries(graph_for_round(schedule, 0), "b") == []
    assert deliveries(graph_for_round(schedule, 1), "b") == [("a", "full"), ("c", "full")]


def test_graph_for_round_wraps_networkx_graphs():
    assert graph_for_round(networkx.DiGraph([("a", "b")]), 0).edges == [("a", "b")]
    assert graph_for_round(lambda r: networkx.DiGraph([("a", "b")]), 3) == chain(["a", "b"])


def test_graph_for_round_errors_name_the_type():
    with pytest.raises(GraphError, match="returned a list for round 2"):
        graph_for_round(lambda r: [("a", "b")], 2)
    with pytest.raises(GraphError, match="returned a NoneType"):
        graph_for_round(lambda r: None, 0)
    with pytest.raises(GraphError, match="graph spec is a str"):
        graph_for_round("complete", 0)  # type: ignore[arg-type]


# --- inbox --------------------------------------------------------------------------------------


def test_inbox_honours_visibility():
    msgs = [
        Msg("a", ["b", "c"], 0, "long reasoning... 42", "42", {"c": "answer"}),
        Msg("b", ["c"], 0, "no idea", None, {"c": "answer"}),
        BareMsg("a", ["c"], 1, "still 42", "42"),
    ]
    assert inbox(msgs, "b") == [InboxItem("a", 0, "long reasoning... 42")]
    assert inbox(msgs, "c") == [
        InboxItem("a", 0, "final answer: 42"),
        InboxItem("b", 0, "final answer: (none)"),
        InboxItem("a", 1, "still 42"),
    ]


def test_inbox_only_messages_to_agent_and_before_round():
    msgs = [
        Msg("b", ["a"], 2, "b2"),
        Msg("a", ["b"], 0, "a0"),  # a's own message: not in a's inbox
        Msg("c", ["a"], 1, "c1"),
        Msg("b", ["a"], 1, "b1"),
        Msg("c", ["b"], 1, "to b only"),
    ]
    assert [i.content for i in inbox(msgs, "a")] == ["c1", "b1", "b2"]  # by round, then sent order
    assert [i.content for i in inbox(msgs, "a", before_round=2)] == ["c1", "b1"]
    assert inbox(msgs, "a", before_round=1) == []
    assert inbox(msgs, "nobody") == []
    assert inbox(iter(msgs), "b") == [InboxItem("a", 0, "a0"), InboxItem("c", 1, "to b only")]


def test_inbox_rejects_bad_visibility_in_a_message():
    with pytest.raises(GraphError, match="message from 'a' to 'b' in round 0 has visibility 'x'"):
        inbox([Msg("a", ["b"], 0, "hi", visibility={"b": "x"})], "b")


def test_routing_then_inbox_end_to_end():
    g = from_edges([("a", "b"), ("a", "c", {"visibility": "answer"}), ("b", "a")])
    sent = {"a": ("I reason... so 7", "7"), "b": ("agree, 7", "7"), "c": ("silent", None)}
    msgs = []
    for sender, (text, answer) in sent.items():
        routed = deliveries(g, sender)
        msgs.append(Msg(sender, [r for r, _ in routed], 0, text, answer, dict(routed)))
    assert inbox(msgs, "a") == [InboxItem("b", 0, "agree, 7")]
    assert inbox(msgs, "b") == [InboxItem("a", 0, "I reason... so 7")]
    assert inbox(msgs, "c") == [InboxItem("a", 0, "final answer: 7")]


# --- properties ---------------------------------------------------------------------------------

names = st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=6, unique=True)


@st.composite
def graphs(draw):
    agents = draw(names)
    pairs = [(u, v) for u, v in permutations(agents, 2)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    edges = [(u, v, {"visibility": draw(st.sampled_from(VISIBILITY))}) for u, v in chosen]
    return agents, edges


@given(graphs())
def test_from_edges_round_trips_and_deliveries_match_receivers(case):
    agents, edges = case
    g = from_edges(edges, agents=agents)
    assert g.agents == agents
    # edges come grouped by sender in agent order, each sender's in the order given
    assert g.edges == [(u, v) for s in agents for u, v, _ in edges if u == s]
    assert from_edges(g.to_edge_list(), agents=agents) == g
    g.validate(agents)
    for sender in agents:
        assert deliveries(g, sender) == [(r, g.visibility(sender, r)) for r in g.receivers(sender)]
        for receiver in g.receivers(sender):
            assert sender in g.senders(receiver)


@given(names, st.sampled_from(VISIBILITY))
def test_builders_on_random_agents(agents, vis):
    n = len(agents)
    assert len(complete(agents, visibility=vis).edges) == n * (n - 1)
    assert len(chain(agents, visibility=vis).edges) == n - 1
    r = ring(agents, visibility=vis)
    assert all(len(r.receivers(a)) == 1 and len(r.senders(a)) == 1 for a in agents)
    s = star(agents[0], agents[1:], visibility=vis)
    assert len(s.edges) == 2 * (n - 1)
    assert {v for _, v in deliveries(s, agents[0])} == {vis}
