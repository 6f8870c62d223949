"""Strategy tables of an OpenSpiel game side by side. At each evaluation of a league on an
OpenSpiel game the training loop writes the learner's policy to ``RUN/strategy/step-NNNNNN.json``
(`loading.read_strategies` reads them):

    {"step": 40, "exploitability": 0.21, "policy": {"0": {"Bet": 0.3, "Pass": 0.7}, "0b": {...}, ...}}

that is, information state (OpenSpiel's string for what the player knows) -> legal move ->
probability. `strategy_table` sets tables of several steps side by side, one row per
information state; `strategy_entropy` says how decided each policy is: the mean over the
states of the entropy of the move probabilities, in bits (0: always the same move).

>>> first = {"step": 0, "policy": {"0": {"Bet": 0.5, "Pass": 0.5}}}
>>> last = {"step": 9, "policy": {"0": {"Bet": 0.0, "Pass": 1.0}}}
>>> strategy_table([first, last]).to_records()
[{'information_state': '0', 'Bet, step 0': 0.5, 'Bet, step 9': 0.0, 'Pass, step 0': 0.5, 'Pass, step 9': 1.0}]
>>> [row["mean_entropy_bits"] for row in strategy_entropy([first, last])]
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .tables import Table, mean
from .textstats import entropy_bits

ENTROPY_COLUMNS = ["step", "states", "exploitability", "mean_entropy_bits", "uniform_entropy_bits"]


def strategy_table(tables: Sequence[Mapping[str, Any]]) -> Table:
    """One row per information state (sorted, every state of any table) and, for each move
    (sorted by name) and each table in the given order, the move's probability at that step:
    columns ``information_state``, ``"<move>, step <N>"``. None where the move is not legal
    at the state or the state is not in that table."""
    moves = sorted({move for t in tables for state in t["policy"].values() for move in state})
    states = sorted({state for t in tables for state in t["policy"]})
    columns = [(f"{move}, step {t['step']}", move, t["policy"]) for move in moves for t in tables]
    rows = [{"information_state": state} | {name: policy.get(state, {}).get(move) for name, move, policy in columns}
            for state in states]
    return Table(rows, ["information_state", *(name for name, _, _ in columns)])


def strategy_entropy(tables: Sequence[Mapping[str, Any]]) -> Table:
    """Per table: ``step``, ``states``, ``exploitability`` (as written, else None),
    ``mean_entropy_bits`` (the mean over states of the entropy of its move probabilities) and
    ``uniform_entropy_bits`` (the same for uniform play over the legal moves: the most there is)."""
    rows = []
    for t in tables:
        policy = t["policy"]
        rows.append({
            "step": t["step"], "states": len(policy), "exploitability": t.get("exploitability"),
            "mean_entropy_bits": mean(entropy_bits(moves) for moves in policy.values()),
            "uniform_entropy_bits": mean(math.log2(len(moves)) for moves in policy.values() if moves),
        })
    return Table(rows, ENTROPY_COLUMNS)
