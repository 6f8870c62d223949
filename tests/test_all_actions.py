"""The all-actions trainer and its parts: the loss on a two-move toy against hand-computed
gradients, the magnet's pull, the regulariser on a batch whose rewards all tie, move forks
that give Kuhn poker's exact move values, and a training step on the tiny model that changes
the adapter and nothing else."""

from __future__ import annotations

import math
import random

import pytest
import torch

from multiagent_rl.branching import MoveForks
from multiagent_rl.config import load_config
from multiagent_rl.rollout import Decision, rollout
from trainers.all_actions import all_actions_loss, leaf_returns, move_values
from trainers.loop import Run
from trainers.magnet import SUFFIX as MAGNET_SUFFIX

pyspiel = pytest.importorskip("pyspiel")  # the games extra


def test_the_policy_term_is_the_exact_policy_gradient_of_a_two_move_toy():
    scores = torch.tensor([0.3, -0.2], requires_grad=True)
    coef = torch.tensor([1.5, -0.5])
    loss, _ = all_actions_loss(scores, coef, None, visits=1, magnet_coef=0.0, legal_coef=0.0)
    loss.backward()
    pi = torch.softmax(scores.detach(), 0)
    # d/ds_i of -sum_j pi_j c_j = -pi_i (c_i - sum_j pi_j c_j)
    expected = -pi * (coef - (pi * coef).sum())
    assert torch.allclose(scores.grad, expected, atol=1e-6)


def test_the_magnet_term_pulls_the_policy_toward_the_magnet():
    scores = torch.tensor([2.0, 0.0], requires_grad=True)
    magnet = torch.log(torch.tensor([0.3, 0.7]))
    loss, parts = all_actions_loss(scores, torch.zeros(2), magnet, visits=1, magnet_coef=1.0, legal_coef=0.0)
    loss.backward()
    pi = torch.softmax(scores.detach(), 0)
    kl = (pi * (pi.log() - magnet)).sum()
    assert float(parts["kl"]) == pytest.approx(float(kl))
    assert torch.allclose(scores.grad, pi * (pi.log() - magnet - kl), atol=1e-6)  # d KL(pi || m) / d s
    stepped = torch.softmax(scores.detach() - 0.1 * scores.grad, 0)
    assert float((stepped * (stepped.log() - magnet)).sum()) < float(kl)  # a descent step moves toward the magnet
    assert scores.grad[0] > 0 > scores.grad[1]  # the move the policy over-weights goes down


def test_the_regularisers_act_when_every_reward_ties():
    scores = torch.tensor([-9.0, -11.0], requires_grad=True)
    loss, parts = all_actions_loss(scores, torch.zeros(2), torch.log(torch.tensor([0.5, 0.5])), visits=3,
                                   magnet_coef=0.1, legal_coef=0.1)
    loss.backward()
    assert scores.grad.abs().sum() > 0  # no advantage anywhere, and still a gradient
    assert float(parts["legal"]) == pytest.approx(float(torch.logsumexp(scores.detach(), 0).exp()))
    # The legality term raises both legal replies alike: -0.1 * 3 * mean'(s) = -0.15 each, plus the magnet's.
    pi = torch.softmax(scores.detach(), 0)
    magnet_grad = 0.3 * pi * (pi.log() - torch.log(torch.tensor(0.5)) - float(parts["kl"]))
    assert torch.allclose(scores.grad, magnet_grad - 0.15, atol=1e-6)


def test_move_values_weigh_a_subtree_by_the_policy_and_decisions_by_the_others_reach():
    # a decides (L, R); after L, b decides (l, r). Returns for a: L-l 2, L-r -2, R 1.
    top = Decision(0, "a", "x", 0, (0,), [], ["L", "R"], 1.0)
    below = Decision(0, "b", "x", 1, (0, 0), [], ["l", "r"], 1.0)
    leaves = {(0, (0, 0, 0)): {"a": 2.0, "b": -2.0}, (0, (0, 0, 1)): {"a": -2.0, "b": 2.0},
              (0, (0, 1)): {"a": 1.0, "b": -1.0}}
    values = move_values([top, below], [[0.5, 0.5], [0.25, 0.75]], leaves)
    assert values.q[0] == pytest.approx([0.25 * 2 + 0.75 * -2, 1.0])  # L is worth b's policy's mean
    assert values.q[1] == pytest.approx([-2.0, 2.0])
    assert values.weights == pytest.approx([1.0, 0.5])  # b's decision is reached when a plays L: 0.5
    assert values.advantages[0] == pytest.approx([-1.0, 1.0])  # against a's own mean, 0.5 * -1 + 0.5 * 1


class NoGeneration:
    """A backend that fails if asked: with every decision forked, nothing is generated."""

    def generate(self, requests, seed=None):
        raise AssertionError(f"{len(requests)} generations asked for")


def openspiel_values(state, player: int) -> float:
    """The exact expected return of `player` from `state` under uniform play (chance by its odds)."""
    if state.is_terminal():
        return state.returns()[player]
    if state.is_chance_node():
        return sum(p * openspiel_values(state.child(a), player) for a, p in state.chance_outcomes())
    actions = state.legal_actions()
    return sum(openspiel_values(state.child(a), player) for a in actions) / len(actions)


def test_forking_every_decision_gives_kuhn_pokers_exact_move_values():
    from scenarios.kuhn_poker import make_scenario

    scenario = make_scenario(opponent="model")
    tasks = [scenario.sample_task(random.Random(seed), "train") for seed in range(4)]
    batch = rollout(scenario, NoGeneration(), tasks, adapters={"player_0": "p", "player_1": "p"},
                    move_forks=MoveForks(probability=1.0))
    assert not batch.samples and batch.generated_tokens == 0
    assert len(batch.decisions) == 4 * len(tasks)  # Kuhn: 4 decision nodes per deal
    assert len(batch.episodes) == 5 * len(tasks)  # and 5 ways for a deal to end
    uniform = [[0.5] * len(d.moves) for d in batch.decisions]
    values = move_values(batch.decisions, uniform, leaf_returns(batch))
    game = pyspiel.load_game("kuhn_poker")
    for k, decision in enumerate(batch.decisions):
        # Replay the deal and the forced moves on the path to the decision in OpenSpiel itself.
        episode = next(ep for ep in batch.episodes if ep.group == decision.group and tuple(ep.branch[:len(decision.node)]) == decision.node)
        history = [e["history"] for e in episode.events if "history" in e][0]
        state = game.new_initial_state()
        for action in history[:2 + len(decision.node) - 1]:  # the two cards, then the moves above the decision
            state.apply_action(action)
        player = int(decision.agent[-1])
        assert state.current_player() == player
        names = {state.action_to_string(player, a): a for a in state.legal_actions()}
        exact = [openspiel_values(state.child(names[move]), player) for move in decision.moves]
        assert values.q[k] == pytest.approx(exact, abs=1e-9)


def test_a_training_step_changes_the_adapter_and_never_the_base_or_the_magnet(single_thread, tmp_path):
    config = load_config(None, [
        "model=tiny", "scenario=kuhn_poker", "scenario_options={opponent: model}", "trainer=all_actions",
        "rollout.move_forks={probability: 1.0}", "league.mode=mirror", "league.snapshot_every=5", "tasks_per_step=3",
        "group_size=1", "eval_episodes=2", "eval_every=0", "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2",
        "mixed_precision=no", "all_actions.magnet_every=5",
    ])
    run = Run(config, tmp_path / "r")
    live = run.team.policy_adapters[0]
    weights = lambda name: {n: p.detach().clone() for n, p in run.model.named_parameters() if f".{name}." in n}  # noqa: E731
    base = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_" not in n}
    before, magnet = weights(live), weights(live + MAGNET_SUFFIX)
    run.step = 1
    record = run.train_step(1)
    assert record.update["moves/decisions"] == 12 and record.update["moves/value_spread"] > 0  # values differ
    assert record.update["update/optimizer_steps"] == 1
    assert any(not torch.equal(before[n], p) for n, p in weights(live).items())
    assert all(torch.equal(magnet[n], p) for n, p in weights(live + MAGNET_SUFFIX).items())  # refreshed every 5
    assert all(torch.equal(base[n], p) for n, p in run.model.named_parameters() if n in base)


def test_all_actions_refuses_a_game_without_listed_moves(tmp_path):
    from multiagent_rl.config import ConfigError

    with pytest.raises(ConfigError, match="needs a game that lists its legal moves"):
        Run(load_config(None, ["model=tiny", "scenario=debate", "trainer=all_actions", "rollout.move_forks={}",
                               "log_with=[]", "mixed_precision=no"]), tmp_path / "r")


@pytest.mark.parametrize(("prefix_key", "cluster_key"), [(32, 16), (3, 1), (3, 2)])
def test_scoring_with_the_prompt_run_once_equals_scoring_every_reply_whole(single_thread, monkeypatch, prefix_key,
                                                                           cluster_key):
    """Each move's log-prob and its gradient, with shared prefixes and prompts run once, are
    those of the whole prompt + reply sequence (moves and prompt tails of different lengths;
    key 3 groups the prompts that begin 5, 6, 7 over a shared prefix, with padded tails)."""
    from multiagent_rl import token_scoring
    from multiagent_rl.adapters import LoraSettings, attach_adapters
    from multiagent_rl.backends.hf import end_token_ids
    from multiagent_rl.models import load_model
    from multiagent_rl.move_policy import MoveChoice, move_scores

    torch.manual_seed(0)
    model, tokenizer = load_model("tiny")
    model = model.double()  # float64, so the comparison's tolerance can be tight
    model = attach_adapters(model, ["a"], LoraSettings(rank=2, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)
    end = end_token_ids(model, tokenizer)
    monkeypatch.setattr(token_scoring, "PREFIX_KEY", prefix_key)
    monkeypatch.setattr(token_scoring, "CLUSTER_KEY", cluster_key)
    choices = [MoveChoice((5, 6, 7, 8, 9), ((11,), (12, 13, 14)), 1.0), MoveChoice((21, 22), ((31, 32), (33,), (34,)), 0.7),
               MoveChoice((5, 6, 7, 8, 40, 41, 42), ((11,), (15,)), 1.0), MoveChoice((5, 6, 7, 50), ((16, 17),), 1.3)]
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    shared = move_scores(model, choices, end, tokenizer.pad_token_id)
    grads = torch.autograd.grad(sum((s * torch.arange(1.0, len(s) + 1)).sum() for s in shared), params)
    whole = []
    for choice in choices:
        row = []
        for move in choice.moves:
            ids = torch.tensor([[*choice.prompt_ids, *move]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, len(choice.prompt_ids) - 1:] / choice.temperature, -1)
            said = logp[torch.arange(len(move)), torch.tensor(move)].sum()
            row.append(said + torch.logsumexp(logp[-1, end], 0))
        whole.append(torch.stack(row))
    expected = torch.autograd.grad(sum((s * torch.arange(1.0, len(s) + 1)).sum() for s in whole), params)
    for a, b in zip(shared, whole, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), float((a - b).abs().max())  # see test_token_scoring


def test_one_pass_and_micro_batched_updates_take_the_same_step(single_thread, tmp_path):
    """Decisions that fit one micro-batch are scored once, with gradients, for both the values
    and the loss; split into micro-batches they are read first, then scored again: the same
    loss and gradient (Adam's first step is lr x sign(g), so the weights are not compared)."""
    updates = []
    for micro in (16, 2):
        torch.manual_seed(0)
        config = load_config(None, [
            "model=tiny", "scenario=kuhn_poker", "scenario_options={opponent: model}", "trainer=all_actions",
            "rollout.move_forks={probability: 1.0}", "league.mode=mirror", "tasks_per_step=2", "group_size=1",
            "eval_episodes=2", "eval_every=0", "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2",
            "mixed_precision=no", f"micro_batch_size={micro}",
        ])
        run = Run(config, tmp_path / f"m{micro}")
        run.step = 1
        updates.append(run.train_step(1).update)
    assert updates[0]["update/optimizer_steps"] == updates[1]["update/optimizer_steps"] == 1
    for key in ("loss/policy", "grad_norm", "moves/entropy", "moves/legal_mass", "moves/value_spread", "loss/magnet_kl"):
        assert updates[0][key] == pytest.approx(updates[1][key], rel=1e-4, abs=1e-6), key


def test_grpo_with_a_magnet_pulls_toward_a_snapshot_that_refreshes_on_schedule(single_thread, tmp_path):
    """grpo.reference=magnet: the KL's reference is a frozen copy of the adapter, moved to the
    adapter's weights every magnet_every updates and kept in checkpoints; without beta it is refused."""
    from multiagent_rl.config import ConfigError

    common = ["model=tiny", "scenario=tictactoe", "scenario_options={opponent: model}", "league.mode=mirror",
              "grpo.advantage=role_baseline", "tasks_per_step=2", "group_size=2", "eval_episodes=2", "eval_every=0",
              "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2", "mixed_precision=no"]
    with pytest.raises(ConfigError, match="needs beta > 0"):
        Run(load_config(None, [*common, "grpo.reference=magnet"]), tmp_path / "no-beta")
    run = Run(load_config(None, [*common, "grpo.reference=magnet", "beta=0.1", "grpo.magnet_every=2", "save_every=1",
                                 "steps=2"]), tmp_path / "r")
    live = run.team.policy_adapters[0]
    weights = lambda name: {n.replace(name, "X"): p.detach().clone() for n, p in run.model.named_parameters() if f".{name}." in n}  # noqa: E731
    start = weights(live + MAGNET_SUFFIX)
    assert all(torch.equal(start[n], p) for n, p in weights(live).items())  # a copy of the adapter
    run.train()
    assert all(torch.equal(weights(live)[n], p) for n, p in weights(live + MAGNET_SUFFIX).items())  # refreshed at 2
    assert (run.run_dir / "checkpoints" / "step-2" / "magnet.safetensors").is_file()


def test_a_uniform_magnet_is_an_entropy_bonus(single_thread, tmp_path):
    """magnet=uniform: the KL is to each legal move alike, log M - H(pi) per decision."""
    run = Run(load_config(None, [
        "model=tiny", "scenario=kuhn_poker", "scenario_options={opponent: model}", "trainer=all_actions",
        "rollout.move_forks={probability: 1.0}", "league.mode=mirror", "tasks_per_step=2", "group_size=1",
        "eval_episodes=2", "eval_every=0", "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2",
        "mixed_precision=no", "all_actions.magnet=uniform", "all_actions.magnet_coef=0.5",
    ]), tmp_path / "r")
    assert not any(MAGNET_SUFFIX in name for name in run.model.peft_config)  # no snapshot adapter
    run.step = 1
    update = run.train_step(1).update
    # Every Kuhn decision has two moves: KL(pi || uniform) = log 2 - H(pi), averaged over decisions.
    assert update["loss/magnet_kl"] == pytest.approx(math.log(2) - update["moves/entropy"], abs=1e-5)


def test_a_linear_schedule_falls_to_zero_at_the_last_step():
    from trainers.base import lr_factor

    cfg = load_config(None, ["model=tiny", "steps=10", "lr_schedule=linear", "warmup_steps=2"])
    assert [round(lr_factor(cfg)(k), 3) for k in (0, 1, 5, 9, 10)] == [0.5, 0.9, 0.5, 0.1, 0.0]
    assert lr_factor(load_config(None, ["model=tiny", "steps=10"]))(9) == 1.0
