"""The tree estimator: credit for each turn from the episodes that branched below it.

In a branched rollout (`rollout.branching`) a task's episodes form a tree: the leaves are
the finished episodes, each inner node a turn the leaves below it share. A turn's value is
the mean return of the leaves in its own subtree; its advantage is that minus the
leave-one-out mean of its siblings' subtrees (C3's counterfactual baseline): alternatives
taken from the same state, so whatever came before cancels. Each distinct turn is trained
once, with its node's advantage. Returns are the ledger's, per stream (per-turn and final
rewards: rewards earned before a node are shared by its siblings and cancel).

With `grpo.scale_rewards` the difference is divided by the siblings' spread (times
(n-1)/n, so a node's advantage is (V - mean) / std, GRPO's scale); without it, it is C3's
raw leave-one-out difference. Without forks the siblings are the task's group samples: the
one-level case is GRPO with a leave-one-out baseline, and a fork before one turn step gives
AT-GRPO's turn-level groups (same task, turn and agent, identical prefix). Registered as
`tree`: `grpo.advantage: tree`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from multiagent_rl.rollout import RolloutBatch

from .base import Estimate, Returns, register_estimator
from .distributed import Ranks

Node = tuple[int, tuple[int, ...]]  # (task group, path from the group's root)


@register_estimator("tree")
def tree_estimate(returns: Returns, settings) -> Estimate:
    """Per-node advantages (`Estimate.nodes`) from one point per leaf episode with its path.

    >>> r = Returns(torch.tensor([[1.], [0.], [1.], [1.]]), torch.arange(4), torch.zeros(4, dtype=torch.long),
    ...             branches=[(0, 0), (0, 1), (1, 0), (1, 1)])
    >>> est = tree_estimate(r, None)
    >>> [round(float(est.nodes[(0, p)][0]), 3) for p in [(0,), (1,), (0, 0), (0, 1), (1, 0)]]
    [-1.0, 1.0, 1.0, -1.0, 0.0]
    """
    if returns.branches is None:
        raise ValueError("the tree estimator needs each episode's branch path (Returns.branches)")
    scale = getattr(settings, "scale_rewards", True)
    totals = returns.rewards.float()  # (E, S): one point per leaf episode
    sums: dict[Node, torch.Tensor] = {}
    counts: dict[Node, int] = defaultdict(int)
    for e, path in enumerate(returns.branches):
        group = int(returns.groups[e])
        for depth in range(1, len(path) + 1):
            node = (group, tuple(path[:depth]))
            sums[node] = sums[node] + totals[e] if node in sums else totals[e].clone()
            counts[node] += 1
    values = {node: sums[node] / counts[node] for node in sums}  # each subtree's mean return
    siblings: dict[Node, list[Node]] = defaultdict(list)
    for node in values:
        siblings[(node[0], node[1][:-1])].append(node)
    advantages: dict[Node, torch.Tensor] = {}
    tied = singletons = 0
    streams = totals.shape[1]
    for family in siblings.values():
        if len(family) == 1:
            singletons += streams
            advantages[family[0]] = torch.zeros(streams)
            continue
        v = torch.stack([values[node] for node in family])  # (n, S)
        n = len(family)
        leave_one_out = (v.sum(0, keepdim=True) - v) / (n - 1)
        a = v - leave_one_out
        if scale:
            a = a * (n - 1) / n / (v.std(0, unbiased=False, keepdim=True) + 1e-4)
        # Compare the values themselves: a float mean of equal values can be off by an ulp.
        equal = torch.all(v == v[:1], dim=0)  # (S,)
        a[:, equal] = 0.0
        tied += int(equal.sum())
        for node, row in zip(family, a, strict=True):
            advantages[node] = row
    leaf = [advantages[(int(returns.groups[e]), tuple(p))] for e, p in enumerate(returns.branches)]
    counts_out = {"groups": float(len(siblings) * streams), "singleton_groups": float(singletons),
                  "equal_reward_groups": float(tied)}
    return Estimate(torch.stack(leaf), totals, counts_out, nodes=advantages)


def tree_metrics(batch: RolloutBatch, advantages: Sequence[float], agents: Sequence[str], rounds: int | None,
                 ranks: Ranks) -> dict[str, float]:
    """Leaves per task, tree depth (forks passed), and the advantage's mean and std per agent
    (and per agent and turn step, where the scenario has a fixed schedule of `rounds`), over
    every rank. `advantages`: those of `batch.samples`' trainable turns, in order."""
    trainable = [s for s in batch.samples if s.trainable]
    keys = [(a, None) for a in agents] + [(a, r) for a in agents for r in range(rounds or 0)]
    sums = dict.fromkeys(keys, (0.0, 0.0, 0.0))  # count, sum, sum of squares
    for sample, adv in zip(trainable, advantages, strict=True):
        for key in ((sample.agent, None), (sample.agent, sample.round)):
            if key in sums:
                n, s, q = sums[key]
                sums[key] = (n + 1, s + adv, q + adv * adv)
    groups = len({ep.group for ep in batch.episodes})
    depth = sum(len(ep.branch) - 1 for ep in batch.episodes)
    flat = [x for key in keys for x in sums[key]]
    total = ranks.sum([float(len(batch.episodes)), float(groups), float(depth), *flat])
    episodes, groups_all, depth_all, rest = total[0], total[1], total[2], total[3:]
    metrics = {"tree/leaves_per_task": episodes / max(groups_all, 1), "tree/depth": depth_all / max(episodes, 1)}
    for i, (agent, turn) in enumerate(keys):
        n, s, q = rest[3 * i:3 * i + 3]
        if not n:
            continue
        mean = s / n
        name = agent if turn is None else f"{agent}/step{turn}"
        metrics[f"tree/advantage_mean/{name}"] = mean
        metrics[f"tree/advantage_std/{name}"] = max(q / n - mean * mean, 0.0) ** 0.5
    return metrics
