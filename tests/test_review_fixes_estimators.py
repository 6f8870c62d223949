"""Estimator fixes on hand-made returns: the role baseline follows only the learner's seats and
reports ties; the tree estimator keeps sibling margins comparable, refuses a plan that leaves
turns certain to go untrained, and reports the share it leaves untrained."""

from __future__ import annotations

import pytest
import torch

from multiagent_rl.branching import Fork
from multiagent_rl.config import ConfigError, load_config
from multiagent_rl.records import Episode, Task
from multiagent_rl.rollout import RolloutBatch, TurnSample, rollout
from tests.test_branching import CHAIN, YesNoBackend, chain, pair, tasks
from trainers.base import Returns
from trainers.distributed import SINGLE
from trainers.grpo import episode_returns
from trainers.role_baseline import RoleBaseline
from trainers.tree import check_tree_plan, tree_estimate, tree_metrics

BASELINE = type("S", (), {"baseline_decay": 0.5})()


# ----- the role baseline in a league -------------------------------------------------------
def test_the_role_baseline_moves_only_with_the_seats_the_learner_played():
    # Groups 0, 1: the learner in seat 0 wins both; groups 2, 3: in seat 1, wins both. The
    # snapshot's seats lose; averaged in, they would pull each baseline to 0.
    rewards = torch.tensor([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]])
    learner = torch.tensor([[True, False], [True, False], [False, True], [False, True]])
    est = RoleBaseline()
    est(Returns(rewards, torch.arange(4), torch.arange(4), learner=learner), BASELINE)
    assert est.baselines == pytest.approx([0.5, 0.5])  # 0.5 * 0 + 0.5 * the learner's mean return, 1
    # A seat the learner did not play in a batch keeps its baseline.
    est(Returns(torch.tensor([[-1.0, 1.0]]), torch.arange(1), torch.arange(1), learner=torch.tensor([[True, False]])),
        BASELINE)
    assert est.baselines == pytest.approx([-0.25, 0.5])
    # Without the mask (mirror play, every seat the learner's) every episode counts, as before.
    mirror = RoleBaseline()
    mirror(Returns(rewards, torch.arange(4), torch.arange(4)), BASELINE)
    assert mirror.baselines == pytest.approx([0.0, 0.0])


def turn(episode: int, agent: str, trainable: bool) -> TurnSample:
    return TurnSample(episode=episode, group=episode, agent=agent, adapter="shared" if trainable else "frozen-step-0",
                      round=0, prompt_ids=[1], completion_ids=[2], logprobs=[-1.0], finish_reason="stop",
                      trainable=trainable)


def test_episode_returns_mark_the_streams_the_learner_played():
    episodes = [Episode(episode_id=f"e{e}", scenario="s", task=Task(key="t", prompt=""), group=e, branch=[0],
                        rewards={"x": 1.0, "o": -1.0}) for e in range(3)]
    samples = [turn(0, "x", True), turn(0, "o", False), turn(0, "x", True),
               turn(1, "x", False), turn(1, "o", True), turn(2, "o", False)]
    returns = episode_returns(RolloutBatch(episodes=episodes, samples=samples), ["x", "o"])
    assert returns.learner.tolist() == [[True, False], [False, True], [False, False]]
    team = episode_returns(RolloutBatch(episodes=episodes, samples=samples), ["x", "o"], reward_source="team")
    assert team.learner.tolist() == [[True], [True], [False]]


def test_the_role_baseline_counts_groups_whose_returns_tie():
    rewards = torch.tensor([[1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [0.0, 0.0], [0.5, 0.5]])
    groups = torch.tensor([0, 0, 1, 1, 2])  # group 0 ties in both streams, group 1 differs, group 2 has one episode
    counts = RoleBaseline()(Returns(rewards, torch.arange(5), groups), BASELINE).counts
    assert counts == {"groups": 6.0, "singleton_groups": 0.0, "equal_reward_groups": 2.0}
    # Only the streams the learner played in a group count.
    learner = torch.tensor([[True, False], [True, False], [False, True], [False, True], [True, False]])
    counts = RoleBaseline()(Returns(rewards, torch.arange(5), groups, learner=learner), BASELINE).counts
    assert counts == {"groups": 3.0, "singleton_groups": 0.0, "equal_reward_groups": 1.0}


# ----- the tree estimator --------------------------------------------------------------------
def test_scaled_tree_advantages_keep_the_margin_of_each_sibling_pair():
    # Two tasks, each a pair of siblings: margins 2 and 1. One scale for the batch keeps 2:1
    # (each pair's own std made both +-1).
    returns = Returns(torch.tensor([[2.0], [0.0], [1.0], [0.0]]), torch.arange(4), torch.tensor([0, 0, 1, 1]),
                      branches=[(0,), (1,), (0,), (1,)])
    nodes = tree_estimate(returns, None).nodes
    wide, narrow = float(nodes[(0, (0,))][0]), float(nodes[(1, (0,))][0])
    assert wide == pytest.approx(2 * narrow) and float(nodes[(0, (1,))][0]) == pytest.approx(-wide)
    # The scale is the root mean square of V - mean over the untied sets' nodes: sqrt((1 + 1 + 1/4 + 1/4) / 4).
    assert wide == pytest.approx(1.0 / (0.625 ** 0.5 + 1e-4))
    # A tied pair adds nothing to the scale and gets 0.
    tied = Returns(torch.tensor([[2.0], [0.0], [3.0], [3.0]]), torch.arange(4), torch.tensor([0, 0, 1, 1]),
                   branches=[(0,), (1,), (0,), (1,)])
    nodes = tree_estimate(tied, None).nodes
    assert float(nodes[(0, (0,))][0]) == pytest.approx(1.0, abs=1e-3) and float(nodes[(1, (0,))][0]) == 0.0


class Recorder:
    """A rank that records what it sums, alone."""

    def __init__(self):
        self.sent: list[list[float]] = []

    def sum(self, values):
        self.sent.append([float(v) for v in values])
        return [float(v) for v in values]


class WithPeer:
    """A rank whose sums add what another rank sent (its `Recorder`'s), call by call."""

    def __init__(self, peer: Recorder):
        self.peer = iter(peer.sent)

    def sum(self, values):
        return [float(v) + w for v, w in zip(values, next(self.peer), strict=True)]


def pairs(values: list[float], groups: list[int]) -> Returns:
    return Returns(torch.tensor(values).reshape(-1, 1), torch.arange(len(values)), torch.tensor(groups),
                   branches=[(k % 2,) for k in range(len(values))])


def test_the_tree_scale_is_the_whole_batchs_over_every_rank():
    # Two ranks, one task each (margins 2 and 1): their advantages are those of one process
    # holding both tasks.
    whole = tree_estimate(pairs([2.0, 0.0, 1.0, 0.0], [0, 0, 1, 1]), None).nodes
    first, second = pairs([2.0, 0.0], [0, 0]), pairs([1.0, 0.0], [1, 1])
    sent_first, sent_second = Recorder(), Recorder()
    tree_estimate(first, None, sent_first)
    tree_estimate(second, None, sent_second)
    sharded = {**tree_estimate(first, None, WithPeer(sent_second)).nodes,
               **tree_estimate(second, None, WithPeer(sent_first)).nodes}
    assert sharded.keys() == whole.keys()
    for node, value in whole.items():
        assert torch.allclose(sharded[node], value), node


def tree_config(group_size: int, plan: str):
    return load_config(None, ["model=tiny", "scenario=chain", "grpo.advantage=tree", f"group_size={group_size}",
                              f"rollout.branching={plan}"])


def test_tree_with_group_size_one_and_no_fork_at_the_first_turn_is_refused():
    with pytest.raises(ConfigError, match=r"group_size=1.*first's turns at step 0.*group_size >= 2"):
        check_tree_plan(tree_config(1, "[{step: 1, n: 2}]"), chain())
    check_tree_plan(tree_config(2, "[{step: 1, n: 2}]"), chain())  # the group's samples are siblings
    check_tree_plan(tree_config(1, "[{step: 0, n: 2}]"), chain())  # every turn is below a fork
    check_tree_plan(tree_config(1, "[{agent: first, n: 2}]"), chain())  # first acts at step 0
    # A counterfactual fork at step 0 holds b's reply for every alternative: b's turn has no siblings.
    pair_config = load_config(None, ["model=tiny", "scenario=pair", "grpo.advantage=tree", "group_size=1",
                                     "rollout.branching=[{step: 0, n: 2, resample: [a]}]"])
    with pytest.raises(ConfigError, match="b's turns at step 0"):
        check_tree_plan(pair_config, pair())


def test_turns_left_without_siblings_are_reported():
    batch = rollout(chain(), YesNoBackend(), tasks(3), group_size=1, seed=1, branching=[Fork(step=1, n=2)])
    zeros = [0.0] * sum(s.trainable for s in batch.samples)
    metrics = tree_metrics(batch, zeros, CHAIN, len(CHAIN), SINGLE)
    # Per task: first's turn (lone), 2 middle turns, 2 last turns.
    assert metrics["tree/untrained_turn_fraction"] == pytest.approx(1 / 5)
    forked = rollout(chain(), YesNoBackend(), tasks(3), group_size=1, seed=1, branching=[Fork(step=0, n=2)])
    zeros = [0.0] * sum(s.trainable for s in forked.samples)
    assert tree_metrics(forked, zeros, CHAIN, len(CHAIN), SINGLE)["tree/untrained_turn_fraction"] == 0.0
