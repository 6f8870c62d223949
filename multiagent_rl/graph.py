"""Who hears whom: message graphs over agent names, topology builders, routing to inboxes.

An edge ``u -> v`` means ``v`` receives ``u``'s messages; its ``visibility`` attribute says
whether ``v`` sees the whole message (``"full"``) or only its final answer (``"answer"``).

>>> g = star("judge", ["alice", "bob"], direction="in")
>>> g.receivers("alice"), deliveries(g, "bob")
(['judge'], [('judge', 'full')])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import permutations
from typing import Any

import networkx

VISIBILITY = ("full", "answer")


class GraphError(ValueError):
    """A bad graph declaration; the message names the bad value and what would be right."""


def _check_visibility(value: Any, where: str) -> str:
    if value not in VISIBILITY:
        raise GraphError(f"{where} has visibility {value!r}; expected one of 'full', 'answer'")
    return value


def _agent_list(agents: Iterable[str], minimum: int = 0, what: str = "") -> list[str]:
    # A bare string is iterable, so complete("ab") would silently mean agents 'a' and 'b'.
    if isinstance(agents, str):
        raise GraphError(f"agents must be a list of names, not the string {agents!r}")
    names = list(agents)
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise GraphError(f"agent names must be strings; got {name!r} ({type(name).__name__})")
        if name in names[:i]:
            raise GraphError(f"duplicate agent name {name!r} in {names}; names must be unique")
    if len(names) < minimum:
        raise GraphError(f"{what} needs at least {minimum} agents; got {len(names)}: {names}")
    return names


class MessageGraph:
    """Who hears whom: a directed graph over agent names; an edge u->v means v receives u's messages.

    >>> g = MessageGraph(networkx.DiGraph([("a", "b")]), agents=["c"])
    >>> g.agents, g.edges, g.visibility("a", "b")
    (['a', 'b', 'c'], [('a', 'b')], 'full')
    """

    def __init__(
        self, graph: networkx.DiGraph | None = None, agents: Iterable[str] | None = None
    ) -> None:
        if graph is not None and (not isinstance(graph, networkx.Graph) or graph.is_multigraph()):
            raise GraphError(
                f"expected a networkx.DiGraph, got {type(graph).__name__}; "
                "build one with networkx.DiGraph([(sender, receiver), ...])"
            )
        # Copy so later edits to the caller's graph cannot reroute a running episode.
        # An undirected graph becomes both directions of every edge.
        g = networkx.DiGraph(graph) if graph is not None else networkx.DiGraph()
        g.add_nodes_from(_agent_list(agents or []))
        _agent_list(g.nodes)  # node names must be strings
        for u, v, data in g.edges(data=True):
            if u == v:  # an agent already sees its own turns; a self-edge would duplicate them
                raise GraphError(f"self-loop ({u!r}, {v!r}): an agent cannot send to itself")
            where = f"edge ({u!r}, {v!r})"
            data["visibility"] = _check_visibility(data.get("visibility", "full"), where)
        # Frozen: one graph is shared by many episodes and rounds, so it is a value, never edited.
        self._g = networkx.freeze(g)

    @property
    def nx(self) -> networkx.DiGraph:
        """The underlying (frozen) networkx graph, for analysis and drawing."""
        return self._g

    @property
    def agents(self) -> list[str]:
        """Agent names in the order they were added."""
        return list(self._g.nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(sender, receiver)`` pairs, grouped by sender in agent order."""
        return list(self._g.edges)

    def _known(self, agent: str) -> None:
        if agent not in self._g:
            raise GraphError(f"unknown agent {agent!r}; known agents: {', '.join(self._g)}")

    def receivers(self, sender: str) -> list[str]:
        """Agents that receive ``sender``'s messages, in the order their edges were added."""
        self._known(sender)
        return list(self._g.successors(sender))

    def senders(self, receiver: str) -> list[str]:
        """Agents whose messages ``receiver`` gets."""
        self._known(receiver)
        return list(self._g.predecessors(receiver))

    def visibility(self, sender: str, receiver: str) -> str:
        """``"full"`` or ``"answer"`` for the edge sender->receiver."""
        if not self._g.has_edge(sender, receiver):
            to = ", ".join(self.receivers(sender)) or "(nobody)"
            raise GraphError(f"no edge ({sender!r}, {receiver!r}); {sender!r} sends to: {to}")
        return self._g.edges[sender, receiver]["visibility"]

    def validate(self, agents: Iterable[str]) -> None:
        """Raise GraphError if the graph names an agent not in ``agents`` (e.g. a typo)."""
        known = list(agents)
        listing = ", ".join(known)
        for u, v in self._g.edges:
            for name in (u, v):
                if name not in known:
                    raise GraphError(
                        f"edge ({u!r}, {v!r}) names unknown agent {name!r}; known agents: {listing}"
                    )
        for name in self._g.nodes:
            if name not in known:
                raise GraphError(f"graph names unknown agent {name!r}; known agents: {listing}")

    def to_edge_list(self) -> list[dict[str, str]]:
        """JSON-friendly edges: ``[{"source": u, "target": v, "visibility": ...}, ...]``."""
        return [
            {"source": u, "target": v, "visibility": vis}
            for u, v, vis in self._g.edges(data="visibility")
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageGraph):
            return NotImplemented
        # Same agents, edges and attributes route identically, whatever the insertion order.
        return networkx.utils.graphs_equal(self._g, other._g)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and attribute dicts are mutable

    def __repr__(self) -> str:
        edges = [
            f"{u}->{v}" + ("[answer]" if vis == "answer" else "")
            for u, v, vis in self._g.edges(data="visibility")
        ]
        shown = ", ".join(edges[:6]) + (", ..." if len(edges) > 6 else "")
        return f"MessageGraph({len(self._g)} agents, {len(edges)} edges: {shown})"


def _build(names: list[str], pairs: Iterable[tuple[str, str]], visibility: str) -> MessageGraph:
    g = networkx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from(pairs, visibility=_check_visibility(visibility, "builder"))
    return MessageGraph(g)


def complete(agents: Iterable[str], *, visibility: str = "full") -> MessageGraph:
    """Everyone hears everyone (debate). ``complete(["a", "b"]).edges == [("a", "b"), ("b", "a")]``"""
    names = _agent_list(agents, 2, "complete()")
    return _build(names, permutations(names, 2), visibility)


def chain(agents: Iterable[str], *, visibility: str = "full") -> MessageGraph:
    """A pipeline a0->a1->...->an. ``chain(["a", "b", "c"]).edges == [("a", "b"), ("b", "c")]``"""
    names = _agent_list(agents, 2, "chain()")
    return _build(names, zip(names, names[1:], strict=False), visibility)


def ring(agents: Iterable[str], *, visibility: str = "full") -> MessageGraph:
    """A chain closed back to its start (cycles are fine). ``ring(["a", "b"])`` has a->b, b->a."""
    names = _agent_list(agents, 2, "ring()")
    return _build(names, zip(names, names[1:] + names[:1], strict=True), visibility)


def star(
    center: str, leaves: Iterable[str], direction: str = "both", *, visibility: str = "full"
) -> MessageGraph:
    """A hub and its leaves: ``"out"`` center->leaves, ``"in"`` leaves->center, ``"both"``.

    >>> star("judge", ["a", "b"], direction="in").edges
    [('a', 'judge'), ('b', 'judge')]
    """
    if direction not in ("out", "in", "both"):
        raise GraphError(f"star direction {direction!r}; expected one of 'out', 'in', 'both'")
    leaf_names = _agent_list(leaves, 1, "star() leaves")
    names = _agent_list([center, *leaf_names], 2, "star()")  # also catches center among leaves
    out = [(center, leaf) for leaf in leaf_names] if direction != "in" else []
    into = [(leaf, center) for leaf in leaf_names] if direction != "out" else []
    return _build(names, out + into, visibility)


def from_edges(
    edges: Iterable[tuple | Mapping[str, str]],
    agents: Iterable[str] | None = None,
    *,
    visibility: str = "full",
) -> MessageGraph:
    """Any topology from ``(u, v)``, ``(u, v, {"visibility": ...})`` or ``to_edge_list()`` dicts.

    ``agents`` adds isolated agents and fixes their order; edges naming others are an error.
    ``visibility`` is the default for edges that do not set their own.

    >>> from_edges([("a", "b"), ("b", "a", {"visibility": "answer"})]).visibility("b", "a")
    'answer'
    """
    default = _check_visibility(visibility, "from_edges() default")
    names = _agent_list(agents) if agents is not None else []
    g = networkx.DiGraph()
    g.add_nodes_from(names)
    for edge in edges:
        if isinstance(edge, Mapping):  # the to_edge_list() form, so edge lists round-trip
            u, v, attrs = edge.get("source"), edge.get("target"), edge
        elif isinstance(edge, tuple) and len(edge) in (2, 3):
            u, v, attrs = edge[0], edge[1], edge[2] if len(edge) == 3 else {}
        else:
            raise GraphError(
                f"bad edge {edge!r}; expected (sender, receiver) or "
                "(sender, receiver, {'visibility': 'full' | 'answer'})"
            )
        g.add_edge(u, v, visibility=attrs.get("visibility", default))
    graph = MessageGraph(g)
    if agents is not None:
        graph.validate(names)
    return graph


GraphSpec = MessageGraph | networkx.DiGraph | Callable[[int], MessageGraph | networkx.DiGraph]


def graph_for_round(spec: GraphSpec, round_index: int) -> MessageGraph:
    """The graph in force in round ``round_index``: a static graph, or ``spec(round_index)``.

    Plain networkx graphs are wrapped in a MessageGraph.

    >>> spec = lambda r: star("lead", ["a", "b"]) if r == 0 else complete(["lead", "a", "b"])
    >>> len(graph_for_round(spec, 0).edges), len(graph_for_round(spec, 1).edges)
    (4, 6)
    """
    graph = spec
    if not isinstance(spec, MessageGraph | networkx.Graph):
        if not callable(spec):
            raise GraphError(
                f"graph spec is a {type(spec).__name__}; "
                "expected a MessageGraph or a function round_index -> MessageGraph"
            )
        graph = spec(round_index)
        if not isinstance(graph, MessageGraph | networkx.DiGraph):
            raise GraphError(
                f"graph function returned a {type(graph).__name__} for round {round_index}; "
                "expected a MessageGraph (e.g. complete(agents)) or a networkx.DiGraph"
            )
    return graph if isinstance(graph, MessageGraph) else MessageGraph(graph)


def deliveries(graph: MessageGraph, sender: str) -> list[tuple[str, str]]:
    """``[(receiver, visibility), ...]`` for a message ``sender`` sends over this round's graph.

    An agent absent from the round's graph sits the round out: its message reaches nobody.

    >>> deliveries(chain(["a", "b"], visibility="answer"), "a")
    [('b', 'answer')]
    """
    if sender not in graph.nx:
        return []
    return [(v, vis) for _, v, vis in graph.nx.out_edges(sender, data="visibility")]


@dataclass(frozen=True)
class InboxItem:
    """One received message as its receiver sees it."""

    sender: str
    round: int
    content: str


def inbox(
    messages: Iterable[Any], agent: str, *, before_round: int | None = None
) -> list[InboxItem]:
    """The messages ``agent`` received, oldest round first, in sending order within a round.

    ``messages`` need ``.sender``, ``.receivers``, ``.round``, ``.text``, ``.answer`` and may have
    ``.visibility`` (receiver -> "full" | "answer"; missing means "full"). ``before_round=r``
    keeps rounds < r: what the agent knows when round r starts.

    >>> from types import SimpleNamespace as M
    >>> msg = M(sender="a", receivers=["b"], round=0, text="so 4", answer="4", visibility={})
    >>> inbox([msg], "b")
    [InboxItem(sender='a', round=0, content='so 4')]
    """
    received = [
        m
        for m in messages
        if agent in m.receivers and (before_round is None or m.round < before_round)
    ]
    received.sort(key=lambda m: m.round)  # stable: keeps sending order within a round
    items = []
    for m in received:
        vis = (getattr(m, "visibility", None) or {}).get(agent, "full")
        # A bad value must not silently fall back to "full": that would leak hidden reasoning.
        _check_visibility(vis, f"message from {m.sender!r} to {agent!r} in round {m.round}")
        answer = m.answer if m.answer is not None else "(none)"
        content = m.text if vis == "full" else f"final answer: {answer}"
        items.append(InboxItem(m.sender, m.round, content))
    return items
