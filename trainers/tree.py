"""The tree estimator: credit for each turn from the episodes that branched below it.

In a branched rollout (`rollout.branching`) a task's episodes form a tree: the leaves are
the finished episodes, each inner node a turn the leaves below it share. A turn's value is
the mean return of the leaves in its own subtree; its advantage is that minus the
leave-one-out mean of its siblings' subtrees (C3's counterfactual baseline): alternatives
taken from the same state, so whatever came before cancels. Each distinct turn is trained
once, with its node's advantage. Returns are the ledger's, per stream (per-turn and final
rewards: rewards earned before a node are shared by its siblings and cancel).

With `grpo.scale_rewards` the advantage is (V - mean of its siblings) divided by one spread
per stream for the whole batch (every rank's): the root mean square of that difference over
the nodes of every untied sibling set. A set's own std would make every pair of siblings
+-1 whatever their margin; one batch-wide scale keeps margins comparable, a margin of 2
twice a margin of 1. Without it, it is C3's raw leave-one-out difference. Without forks the
siblings are the task's group samples: the one-level case is GRPO with a leave-one-out
baseline, and a fork before one turn step gives AT-GRPO's turn-level groups (same task, turn
and agent, identical prefix). Registered as `tree`: `grpo.advantage: tree`.

A node without siblings gets no advantage: with `group_size: 1` every turn before the first
fork is such a node. `check_tree_plan` refuses a run where the plan makes that certain; the
share of trainable turns it leaves untrained is the metric `tree/untrained_turn_fraction`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from multiagent_rl.config import ConfigError, TrainConfig
from multiagent_rl.rollout import RolloutBatch
from multiagent_rl.scenario import Scenario

from .base import Estimate, Returns, register_estimator
from .distributed import SINGLE, Ranks

Node = tuple[int, tuple[int, ...]]  # (task group, path from the group's root)


def tree_estimate(returns: Returns, settings, ranks: Ranks = SINGLE) -> Estimate:
    """Per-node advantages (`Estimate.nodes`) from one point per leaf episode with its path.
    `ranks`: the scale (`settings.scale_rewards`) is taken over every rank's batch.

    >>> r = Returns(torch.tensor([[1.], [0.], [1.], [1.]]), torch.arange(4), torch.zeros(4, dtype=torch.long),
    ...             branches=[(0, 0), (0, 1), (1, 0), (1, 1)])
    >>> est = tree_estimate(r, None)
    >>> [round(float(est.nodes[(0, p)][0]), 3) for p in [(0,), (1,), (0, 0), (0, 1), (1, 0)]]
    [-0.632, 0.632, 1.265, -1.265, 0.0]
    """
    if returns.branches is None:
        raise ValueError("the tree estimator needs each episode's branch path (Returns.branches)")
    scale = getattr(settings, "scale_rewards", True)
    totals = returns.rewards.float()  # (E, S): one point per leaf episode
    streams = totals.shape[1]
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
    centred: dict[Node, torch.Tensor] = {}  # V - the mean of its sibling set, 0 where the set ties
    tied = singletons = 0
    square_sum, untied_nodes = torch.zeros(streams), torch.zeros(streams)  # (S,), (S,)
    for family in siblings.values():
        if len(family) == 1:
            singletons += streams
            centred[family[0]] = torch.zeros(streams)
            continue
        v = torch.stack([values[node] for node in family])  # (n, S)
        d = v - v.mean(0, keepdim=True)  # (n, S)
        # Compare the values themselves: a float mean of equal values can be off by an ulp.
        equal = torch.all(v == v[:1], dim=0)  # (S,)
        d[:, equal] = 0.0
        tied += int(equal.sum())
        square_sum += (d * d).sum(0)
        untied_nodes += len(family) * (~equal).float()
        for node, row in zip(family, d, strict=True):
            centred[node] = row
    if scale:
        # Tied sets stay out of the spread: they carry no signal, and counting their zeros
        # would blow up the few sets that do. One untied set alone gets GRPO's (V - mean) / std.
        summed = ranks.sum([*square_sum.tolist(), *untied_nodes.tolist()])
        spread = (torch.tensor(summed[:streams]) / torch.tensor(summed[streams:]).clamp_min(1)).sqrt()  # (S,)
        advantages = {node: d / (spread + 1e-4) for node, d in centred.items()}
    else:  # V minus the leave-one-out mean of its n - 1 siblings = n / (n - 1) x (V - the set's mean)
        sizes = {node: len(siblings[(node[0], node[1][:-1])]) for node in centred}
        advantages = {node: d * sizes[node] / max(sizes[node] - 1, 1) for node, d in centred.items()}
    leaf = [advantages[(int(returns.groups[e]), tuple(p))] for e, p in enumerate(returns.branches)]
    counts_out = {"groups": float(len(siblings) * streams), "singleton_groups": float(singletons),
                  "equal_reward_groups": float(tied)}
    return Estimate(torch.stack(leaf), totals, counts_out, nodes=advantages)


@register_estimator("tree")
class TreeEstimator:
    """`tree_estimate` as the registered estimator: a class so that `GRPOTrainer` gives it the
    run's ranks (`cls(ranks)`) for its batch-wide scale; it keeps no state."""

    def __init__(self, ranks: Ranks | None = None):
        self.ranks = ranks or SINGLE

    def __call__(self, returns: Returns, settings) -> Estimate:
        return tree_estimate(returns, settings, self.ranks)


def check_tree_plan(config: TrainConfig, scenario: Scenario) -> None:
    """Refuse `grpo.advantage: tree` with `group_size: 1` where the branching plan leaves model
    turns certain to have no siblings, so never trained: a scenario with a fixed schedule whose
    first model turn step is not forked for every model agent acting then."""
    if config.trainer != "grpo" or config.grpo.advantage != "tree" or config.group_size > 1:
        return
    if scenario.schedule is None:
        return  # who acts first is the scenario's hooks' choice: tree/untrained_turn_fraction says
    scripted = {r.name for r in scenario.roles if r.scripted}
    step, acting = next(((i, [a for a in agents if a not in scripted]) for i, agents in enumerate(scenario.schedule)
                         if any(a not in scripted for a in agents)), (None, []))
    if step is None:
        return  # no model turn at all
    forked: set[str] = set()  # the agents acting then that a fork resamples
    for fork in config.rollout.branching:
        if fork.step == step or fork.agent in acting:
            forked |= set(fork.resample or acting)
    lone = [a for a in acting if a not in forked]
    if lone:
        raise ConfigError(
            f"grpo.advantage=tree with group_size=1: {', '.join(lone)}'s turns at step {step} come before any fork "
            f"that resamples them, so they have no siblings and are never trained; set group_size >= 2, or fork "
            f"there (rollout.branching: [{{step: {step}, n: 2}}, ...])"
        )


def tree_metrics(batch: RolloutBatch, advantages: Sequence[float], agents: Sequence[str], rounds: int | None,
                 ranks: Ranks) -> dict[str, float]:
    """Leaves per task, tree depth (forks passed), the share of trainable turns whose node has
    no siblings (no advantage: untrained), and the advantage's mean and std per agent (and per
    agent and turn step, where the scenario has a fixed schedule of `rounds`), over every rank.
    `advantages`: those of `batch.samples`' trainable turns, in order."""
    trainable = [s for s in batch.samples if s.trainable]
    nodes = {(ep.group, tuple(ep.branch[:depth])) for ep in batch.episodes for depth in range(1, len(ep.branch) + 1)}
    family_size = Counter((group, path[:-1]) for group, path in nodes)
    lone = sum(family_size[(s.group, s.branch[:-1])] == 1 for s in trainable)
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
    total = ranks.sum([float(len(batch.episodes)), float(groups), float(depth), float(lone), float(len(trainable)), *flat])
    episodes, groups_all, depth_all, lone_all, turns_all, rest = *total[:5], total[5:]
    metrics = {"tree/leaves_per_task": episodes / max(groups_all, 1), "tree/depth": depth_all / max(episodes, 1),
               "tree/untrained_turn_fraction": lone_all / max(turns_all, 1)}
    for i, (agent, turn) in enumerate(keys):
        n, s, q = rest[3 * i:3 * i + 3]
        if not n:
            continue
        mean = s / n
        name = agent if turn is None else f"{agent}/step{turn}"
        metrics[f"tree/advantage_mean/{name}"] = mean
        metrics[f"tree/advantage_std/{name}"] = max(q / n - mean * mean, 0.0) ** 0.5
    return metrics
