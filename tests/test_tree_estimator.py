"""The tree estimator: leave-one-out credit over sibling subtrees, checked on a chain with a
known answer (only the middle agent's reply decides the reward) against outcome-GRPO, and a
branched training step that trains the adapters and leaves the base model alone."""

from __future__ import annotations

import pytest
import torch

from multiagent_rl.config import load_config
from multiagent_rl.rollout import rollout
from tests.test_branching import CHAIN, PLAN, YesNoBackend, chain, tasks
from tests.test_training import base_state, duo, lora_state
from trainers.base import Returns, advantage_estimator
from trainers.loop import Run


def returns(values, branches, groups=None) -> Returns:
    n = len(values)
    return Returns(torch.tensor(values, dtype=torch.float32).reshape(n, -1), torch.arange(n),
                   torch.tensor(groups or [0] * n), branches=branches)


def test_leave_one_out_without_scaling_is_c3s_difference():
    tree = advantage_estimator("tree")()
    settings = type("S", (), {"scale_rewards": False})()
    est = tree(returns([3.0, 0.0, 0.0], [(0,), (1,), (2,)]), settings)
    assert [round(float(est.nodes[(0, (k,))][0]), 6) for k in range(3)] == [3.0, -1.5, -1.5]


def test_a_node_is_valued_by_its_whole_subtree():
    tree = advantage_estimator("tree")()
    settings = type("S", (), {"scale_rewards": False})()
    # node (0,) has leaves 1 and 0 (mean 0.5); node (1,) one leaf worth 0: the leaf counts, not the branch
    est = tree(returns([1.0, 0.0, 0.0], [(0, 0), (0, 1), (1,)]), settings)
    assert float(est.nodes[(0, (0,))][0]) == pytest.approx(0.5)
    assert float(est.nodes[(0, (0, 0))][0]) == pytest.approx(1.0)
    assert float(est.nodes[(0, (1,))][0]) == pytest.approx(-0.5)


def test_tied_siblings_and_lone_nodes_get_zero_and_are_counted():
    tree = advantage_estimator("tree")()
    est = tree(returns([1.0, 1.0, 2.0], [(0, 0), (0, 1), (1, 0)]), None)
    assert float(est.nodes[(0, (1, 0))][0]) == 0.0 and float(est.nodes[(0, (0, 1))][0]) == 0.0
    assert est.counts == {"groups": 3.0, "singleton_groups": 1.0, "equal_reward_groups": 1.0}


def test_without_forks_it_is_group_relative_like_grpo():
    rewards = [1.0, 0.0, 0.5, 0.25]
    tree = advantage_estimator("tree")()(returns(rewards, [(k,) for k in range(4)]), None)
    group = advantage_estimator("group")(returns(rewards, [(k,) for k in range(4)]), None)
    assert torch.allclose(torch.stack([tree.nodes[(0, (k,))] for k in range(4)]), group.advantages, atol=1e-6)


def chain_run(tmp_path, *overrides: str) -> Run:
    cfg = load_config(None, ["scenario=chain", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2",
                             "eval_episodes=1", "eval_every=0", "lora.rank=2", "lr=0.01", "grpo.reward_source=team",
                             *overrides])
    return Run(cfg, tmp_path, scenario=chain())


def advantages_by_agent(run: Run, batch) -> dict[str, list[tuple[float, int]]]:
    """agent -> (advantage, +1 if that turn said yes else -1) of each trained turn."""
    samples, _ = run.trainer.make_samples(batch)
    turns = [s for s in batch.samples if s.trainable]
    found: dict[str, list[tuple[float, int]]] = {a: [] for a in CHAIN}
    for sample, turn in zip(samples, turns, strict=True):
        found[turn.agent].append((sample.advantage, 1 if turn.completion_ids == [5] else -1))
    return found


def agreement(pairs: list[tuple[float, int]]) -> float:
    """Mean of advantage x (its own reply's sign) over turns with a nonzero advantage."""
    informative = [a * s for a, s in pairs if a != 0.0]
    return sum(informative) / len(informative) if informative else 0.0


def test_credit_goes_to_the_middle_agent_under_the_tree_and_to_everyone_under_grpo(single_thread, tmp_path):
    plan = "rollout.branching=[{step: 0, n: 2}, {step: 1, n: 2}, {step: 2, n: 2}]"
    tree_run = chain_run(tmp_path / "tree", plan, "grpo.advantage=tree", "group_size=1")
    batch = rollout(chain(), YesNoBackend(), tasks(40), group_size=1, seed=7, branching=PLAN,
                    adapters=tree_run.agent_adapters)
    tree = advantages_by_agent(tree_run, batch)
    assert all(a == 0.0 for a, _ in tree["last"])  # its reply never changes the outcome: siblings tie
    assert agreement(tree["middle"]) > 0.99  # its advantage follows its own reply
    assert abs(agreement(tree["first"])) < 0.3  # its reply does not matter: no signal in its credit

    grpo_run = chain_run(tmp_path / "grpo", "group_size=8")
    batch = rollout(chain(), YesNoBackend(), tasks(40), group_size=8, seed=7, adapters=grpo_run.agent_adapters)
    samples, _ = grpo_run.trainer.make_samples(batch)
    by_episode: dict[int, set[float]] = {}
    for sample, turn in zip(samples, [s for s in batch.samples if s.trainable], strict=True):
        by_episode.setdefault(turn.episode, set()).add(sample.advantage)
    assert all(len(values) == 1 for values in by_episode.values())  # one outcome, the same for all three
    assert any(next(iter(values)) != 0.0 for values in by_episode.values())


def test_a_branched_step_trains_the_adapters_and_not_the_base_model(single_thread, tmp_path):
    cfg = load_config(None, ["scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2",
                             "group_size=1", "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01",
                             "grpo.advantage=tree", "rollout.branching=[{step: 0, n: 3}]"])
    run = Run(cfg, tmp_path, scenario=duo())
    base_before = base_state(run.model)
    initial = {a: lora_state(run.model, a) for a in ["solver", "critic"]}
    metrics = run.train_step(1).metrics()
    assert metrics["update/skipped"] == 0.0 and metrics["update/informative_samples"] > 0
    assert metrics["tree/leaves_per_task"] == 3.0 and metrics["tree/depth"] == 1.0
    assert metrics["tree/untrained_turn_fraction"] == 0.0  # forked before the first turn: every turn has siblings
    assert "tree/advantage_std/solver" in metrics and "tree/advantage_mean/critic/step0" in metrics
    for adapter, before in initial.items():
        after = lora_state(run.model, adapter)
        assert any(not torch.equal(before[k], after[k]) for k in before), adapter
    assert all(torch.equal(t, base_state(run.model)[k]) for k, t in base_before.items())
