"""The centralised critic: GAE and the clipped value loss against hand-computed values,
a value that learns on a scenario whose value is learnable, what one critic step changes
and what it must not, checkpoints without pickle, and a resumed run equal to an
uninterrupted one."""

from __future__ import annotations

import json
import random
import statistics

import pytest
import torch
from safetensors.torch import load_file
from test_training import AGENTS, base_state, config, duo, lora_state, metric_lines, without_timing

from multiagent_rl import (
    Role,
    Scenario,
    Task,
    complete,
    individual_rewards,
    read_episodes,
    team_reward,
)
from multiagent_rl.config import ConfigError, load_config
from trainers.base import advantage_estimator, trainer_class
from trainers.critic import VALUE_ADAPTER, decision_points
from trainers.gae import RunningNorm, clipped_value_loss, explained_variance, gae
from trainers.loop import Run


def close(actual: torch.Tensor, expected: list, tol: float = 1e-6) -> bool:
    return torch.allclose(actual.float(), torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


# ----- GAE -----------------------------------------------------------------------------------
def test_gae_by_hand_two_interleaved_streams():
    # turns: A, B, A, B (one episode); stream 0 is A's reward, stream 1 is B's
    rewards = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0], [0.4, 1.5], [0.8, 1.2], [0.1, 1.0]])
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, gamma, lam)
    # by hand, backwards: delta_t = r_t + gamma * V_{t+1} - V_t (V_4 = 0), A_t = delta_t + gamma*lam*A_{t+1}
    for s in range(2):
        v = values[:, s].tolist() + [0.0]
        r = rewards[:, s].tolist()
        expected, running = [0.0] * 4, 0.0
        for t in (3, 2, 1, 0):
            running = (r[t] + gamma * v[t + 1] - v[t]) + gamma * lam * running
            expected[t] = running
        assert close(adv[:, s], expected, 1e-6)
    # stream 0 written out for the last two turns
    assert adv[3, 0] == pytest.approx(0.0 + 0.9 * 0.0 - 0.1)
    assert adv[2, 0] == pytest.approx((1.0 + 0.9 * 0.1 - 0.8) + 0.72 * adv[3, 0].item())
    assert torch.allclose(ret, adv + values)


def test_gae_with_gamma_lambda_one_is_the_monte_carlo_return():
    rewards = torch.tensor([[0.5], [0.0], [-1.0], [2.0]])
    values = torch.tensor([[3.0], [-2.0], [0.7], [0.1]])
    adv, ret = gae(rewards, values, gamma=1.0, lam=1.0)
    assert close(ret[:, 0], [1.5, 1.0, 1.0, 2.0])  # the reward-to-go, whatever the values
    assert close(adv[:, 0], [1.5 - 3.0, 1.0 + 2.0, 1.0 - 0.7, 2.0 - 0.1])


def test_gae_of_an_episode_that_ended_early_and_of_a_truncated_one():
    # an episode of one turn: A = r - V (nothing follows)
    adv, ret = gae(torch.tensor([[1.0]]), torch.tensor([[0.25]]), gamma=0.9, lam=0.95)
    assert close(adv[:, 0], [0.75]) and close(ret[:, 0], [1.0])
    # truncated: the value after the last turn bootstraps it
    adv, _ = gae(torch.tensor([[0.0]]), torch.tensor([[0.25]]), gamma=0.5, lam=1.0, last_value=torch.tensor([1.0]))
    assert close(adv[:, 0], [0.5 * 1.0 - 0.25])


def test_gae_lambda_zero_is_the_one_step_td_error():
    rewards = torch.tensor([[0.0], [1.0]])
    values = torch.tensor([[0.2], [0.6]])
    adv, _ = gae(rewards, values, gamma=0.5, lam=0.0)
    assert close(adv[:, 0], [0.5 * 0.6 - 0.2, 1.0 - 0.6])


def test_estimators_are_registered_pure_functions_of_one_signature():
    from trainers.base import Returns
    from trainers.gae import gae_estimate
    from trainers.grpo import group_estimate

    assert advantage_estimator("gae") is gae_estimate and gae_estimate.needs_values
    assert advantage_estimator("group") is group_estimate and not group_estimate.needs_values
    with pytest.raises(ConfigError, match="unknown advantage estimator 'nope'"):
        advantage_estimator("nope")
    # Two episodes of one group: points (0, 1) and (2,); the same Returns feed both estimators.
    returns = Returns(
        rewards=torch.tensor([[0.0], [1.0], [0.0]]), episodes=torch.tensor([0, 0, 1]), groups=torch.tensor([0, 0, 0]),
        values=torch.tensor([[0.5], [0.5], [0.5]]),
    )
    grouped = group_estimate(returns, load_config(None, ["grpo.scale_rewards=false"]).grpo)
    assert close(grouped.returns[:, 0], [1.0, 1.0, 0.0]) and close(grouped.advantages[:, 0], [0.5, 0.5, -0.5])
    td = gae_estimate(returns, load_config(None, ["critic.lam=1.0"]).critic)
    assert close(td.advantages[:, 0], [0.5, 0.5, -0.5]) and close(td.returns[:, 0], [1.0, 1.0, 0.0])


def test_grpo_refuses_an_estimator_that_needs_a_critic(single_thread, tmp_path):
    with pytest.raises(ConfigError, match="grpo.advantage=gae needs a value model"):
        Run(config("grpo.advantage=gae"), tmp_path, scenario=duo())


# ----- the value loss --------------------------------------------------------------------------
def test_clipped_value_loss_by_hand():
    values = torch.tensor([1.0, 0.0, 0.5])
    old = torch.tensor([0.5, 0.5, 0.5])
    returns = torch.tensor([2.0, 1.0, 0.5])
    loss, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    # 1: v moved +0.5, clipped to 0.7: max((1-2)^2, (0.7-2)^2) = 1.69 -> 0.845 (the clipped term)
    # 2: v moved -0.5, clipped to 0.3: max((0-1)^2, (0.3-1)^2) = 1.0 -> 0.5 (unclipped larger)
    # 3: no move: 0
    assert close(loss, [0.845, 0.5, 0.0])
    assert close(clipped, [1.0, 0.0, 0.0])
    plain, _ = clipped_value_loss(values, old, returns, clip=None)
    assert close(plain, [0.5, 0.5, 0.0])


def test_explained_variance():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(targets, targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), targets) == pytest.approx(0.0)
    assert explained_variance(targets, torch.ones(4)) != explained_variance(targets, torch.ones(4))  # NaN


def test_running_norm_matches_the_whole_data():
    data = torch.tensor([[1.0, -2.0], [3.0, 0.0], [5.0, 4.0], [2.0, 2.0], [0.0, 1.0]])
    norm = RunningNorm(2)
    for part in (data[:2], data[2:]):
        norm.update(len(part), part.sum(0).tolist(), (part**2).sum(0).tolist())
    assert norm.mean == pytest.approx(data.mean(0).tolist())
    assert norm.var == pytest.approx(data.var(0, unbiased=False).tolist())


# ----- the registry --------------------------------------------------------------------------
def test_unknown_trainer_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown trainer 'ppo'; known: all_actions, critic, grpo"):
        trainer_class("ppo")


def test_a_registered_trainer_is_picked_by_name(single_thread, tmp_path):
    from trainers.base import TRAINERS, register_trainer
    from trainers.grpo import GRPOTrainer

    calls = []

    @register_trainer("counting_grpo")
    class CountingGRPO(GRPOTrainer):
        def update(self, batch):
            calls.append(len(batch.samples))
            return super().update(batch)

    try:
        run = Run(config("trainer=counting_grpo"), tmp_path, scenario=duo())
        assert type(run.trainer) is CountingGRPO
        run.train_step(1)
        assert calls == [2 * 3 * 2]  # 2 tasks x 3 samples x 2 agents
    finally:
        TRAINERS.pop("counting_grpo")
    with pytest.raises(TypeError, match="subclass of trainers.base.Trainer"):
        register_trainer("bad")(object)


def test_flat_grpo_keys_still_work_and_land_in_the_section():
    cfg = load_config(None, ["scale_rewards=false", "credit=discounted", "gamma=0.5"])
    assert (cfg.grpo.scale_rewards, cfg.grpo.credit, cfg.grpo.gamma) == (False, "discounted", 0.5)
    with pytest.raises(ConfigError, match="gamma is now grpo.gamma"):
        load_config(None, ["gamma=0.5", "grpo.gamma=0.9"])


# ----- a scenario whose value is learnable --------------------------------------------------
def coloured_task(rng: random.Random) -> Task:
    colour = rng.choice(["red", "blue"])
    return Task(key=f"{colour}{rng.randint(0, 10**6)}", prompt=f"The colour is {colour}.", answer=colour)


def colour_reward(task: Task, episode) -> dict[str, float]:
    # the task alone decides the reward: the state's value is exactly learnable
    return team_reward(1.0 if task.answer == "red" else 0.0, AGENTS)


def colours() -> Scenario:
    return Scenario(
        name="colours", roles=[Role(a, "Say a word.") for a in AGENTS], graph=complete(AGENTS), schedule=[AGENTS],
        make_task=coloured_task, reward=colour_reward, max_new_tokens=2,
    )


def test_explained_variance_rises_where_the_value_is_learnable(single_thread, tmp_path):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=8", "critic.lr=0.003", "lr=0.0001",
                     "critic.value_clip=null"), tmp_path, scenario=colours())
    ev = [run.train_step(step).metrics()["value/explained_variance"] for step in range(1, 26)]
    early, late = statistics.fmean(ev[:3]), statistics.fmean(ev[-5:])
    assert early < 0.2, ev  # measured: about 0.03, then above 0.9 from step 12 on
    assert late > 0.8, ev


# ----- one critic step -----------------------------------------------------------------------
def test_a_critic_step_trains_critic_and_policies_and_leaves_the_base_bit_identical(single_thread, tmp_path):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=4"), tmp_path, scenario=duo())
    assert VALUE_ADAPTER in run.model.peft_config  # the base model's own adapter: no second copy
    base = base_state(run.model)
    policies = {a: lora_state(run.model, a) for a in AGENTS}
    value_lora = lora_state(run.model, VALUE_ADAPTER)
    head = {k: v.detach().clone() for k, v in run.trainer.value.head.state_dict().items()}
    m = run.train_step(1).metrics()
    assert m["update/skipped"] == 0.0  # GRPO would skip every group of one
    for key in ["value/loss", "value/explained_variance", "value/mean", "value/target_mean", "value/clip_fraction",
                "advantage/solver/mean", "advantage/solver/std", "advantage/critic/mean", "advantage/critic/std"]:
        assert key in m, key
    for adapter in AGENTS:
        after = lora_state(run.model, adapter)
        assert any(not torch.equal(after[n], t) for n, t in policies[adapter].items()), f"{adapter} did not train"
    after = lora_state(run.model, VALUE_ADAPTER)
    assert any(not torch.equal(after[n], t) for n, t in value_lora.items()), "the value adapter did not train"
    assert all(not torch.equal(run.trainer.value.head.state_dict()[k], v) for k, v in head.items())
    now = base_state(run.model)
    assert [n for n in base if not torch.equal(base[n], now[n])] == []
    assert all(p.requires_grad == ("lora_" in n) for n, p in run.model.named_parameters() if VALUE_ADAPTER not in n)


def test_per_agent_values_give_one_stream_per_agent(single_thread, tmp_path):
    run = Run(config("trainer=critic", "critic.value_per=agent", "group_size=2", "critic.group_weight=0.5"),
              tmp_path, scenario=duo())
    assert run.trainer.streams == AGENTS
    m = run.train_step(1).metrics()
    assert m["update/skipped"] == 0.0 and m["value/loss"] > 0


# ----- a whole critic run: checkpoints and resume -------------------------------------------------
def critic_config(*more: str):
    return config("trainer=critic", "group_size=2", "save_every=1", "critic.normalize_targets=true", *more)


@pytest.fixture(scope="module")
def critic_run(single_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("critic-run")
    run = Run(critic_config("steps=3"), run_dir, scenario=duo())
    return run, run.train()


def test_critic_checkpoints_hold_the_critic_and_no_pickle(critic_run):
    run, _ = critic_run
    step = run.run_dir / "checkpoints" / "step-3"
    files = [p for p in step.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    assert sorted(p.name for p in (step / "adapters").iterdir()) == sorted(AGENTS)  # policies only
    head = load_file(step / "critic" / "head.safetensors")
    assert torch.equal(head["weight"], run.trainer.value.head.weight.detach().cpu())
    assert (step / "critic" / "adapter" / VALUE_ADAPTER / "adapter_model.safetensors").is_file()
    assert load_file(step / "critic" / "optimizer.safetensors")
    state = json.loads((step / "critic" / "state.json").read_text())
    assert state["streams"] == ["team"] and state["targets"]["count"] > 0
    manifest = json.loads((step / "manifest.json").read_text())
    assert "critic/head.safetensors" in manifest["files"]


def test_a_resumed_critic_run_equals_the_uninterrupted_one(critic_run, tmp_path):
    run, summary = critic_run
    assert summary["steps"] == 3
    Run(critic_config("steps=2"), tmp_path, scenario=duo()).train()
    resumed = Run(critic_config("steps=3"), tmp_path, scenario=duo())
    assert resumed.train()["resumed_from"] == 2
    line_a = next(m for m in metric_lines(run.run_dir) if m["step"] == 3)
    line_b = next(m for m in metric_lines(tmp_path) if m["step"] == 3)
    assert "value/loss" in line_a and without_timing(line_a) == without_timing(line_b)
    texts = [
        [[t.message.text for t in ep.turns] for ep in read_episodes(d / "episodes" / "step-000003.msgpack").episodes]
        for d in (run.run_dir, tmp_path)
    ]
    assert texts[0] == texts[1]
    a, b = lora_state(run.model), lora_state(resumed.model)
    assert a.keys() == b.keys() and any(VALUE_ADAPTER in n for n in a)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert torch.equal(run.trainer.value.head.weight, resumed.trainer.value.head.weight)
    assert run.trainer.targets.state() == resumed.trainer.targets.state()


def test_a_grpo_checkpoint_does_not_resume_as_a_critic_run(critic_run, tmp_path):
    Run(config("steps=1", "save_every=1"), tmp_path, scenario=duo()).train()
    with pytest.raises(ConfigError, match="trainer"):
        Run(critic_config("steps=2"), tmp_path, scenario=duo()).train()


def test_a_run_switched_to_the_critic_says_its_critic_starts_fresh(single_thread, tmp_path, capsys):
    Run(config("steps=1", "save_every=1"), tmp_path, scenario=duo()).train()
    Run(critic_config("steps=2"), tmp_path, scenario=duo(), allow_changes=True).train()
    assert "holds no critic (trained with another trainer): the critic starts fresh" in capsys.readouterr().err
    (line,) = [json.loads(x) for x in (tmp_path / "config-changes.jsonl").read_text().splitlines()]
    assert line["step"] == 2 and "trainer" in line["changes"] and "the critic starts fresh" in line["notes"][0]


def test_individual_rewards_reach_each_agents_stream(single_thread, tmp_path):
    from multiagent_rl.rollout import rollout

    scenario = duo(lambda task, ep: individual_rewards({"solver": 1.0, "critic": -1.0}))
    run = Run(config("trainer=critic", "critic.value_per=agent", "group_size=1"), tmp_path, scenario=scenario)
    batch = rollout(run.scenario, run.backend, run.tasks_for_step(1), adapters=run.agent_adapters, seed=1, record_states=True)
    turns = sorted(batch.samples, key=lambda s: s.key)
    state_of, _, texts = decision_points(turns, batch.states)
    rewards = run.trainer.point_rewards(batch, turns, state_of, len(texts))
    solver, critic = run.trainer.stream_of["solver"], run.trainer.stream_of["critic"]
    assert rewards[:, solver].sum() == pytest.approx(len(batch.episodes))
    assert rewards[:, critic].sum() == pytest.approx(-len(batch.episodes))
    assert all(batch.states[(s.episode, s.round)].startswith("Task: ") for s in turns)


def test_agents_of_one_round_share_a_decision_point():
    from multiagent_rl.rollout import TurnSample
    from trainers.critic import decision_points

    def turn(episode: int, index: int, agent: str, round_index: int) -> TurnSample:
        return TurnSample(episode=episode, group=episode, agent=agent, adapter=agent, round=round_index, prompt_ids=[1],
                          completion_ids=[2], logprobs=[0.0], finish_reason="stop", turn=index)

    turns = [turn(0, 0, "a", 0), turn(0, 1, "b", 0), turn(0, 2, "a", 1), turn(1, 0, "a", 0)]
    state_of, spans, texts = decision_points(turns, {(0, 0): "s0", (0, 1): "s1", (1, 0): "t0"})
    assert state_of == [0, 0, 1, 2]
    assert spans == [(0, 2), (2, 3)]
    assert texts == ["s0\nActing now: a, b", "s1\nActing now: a", "t0\nActing now: a"]


def test_a_separate_critic_model_keeps_the_policy_model_as_it_was(single_thread, tmp_path):
    run = Run(config("trainer=critic", "critic.model=tiny", "group_size=1", "tasks_per_step=4"), tmp_path, scenario=duo())
    value = run.trainer.value.peft_model
    assert value is not run.model and VALUE_ADAPTER not in run.model.peft_config
    before = {n: p.detach().clone() for n, p in value.named_parameters() if "lora_" in n}
    base = base_state(run.model)
    m = run.train_step(1).metrics()
    assert m["update/skipped"] == 0.0
    assert any(not torch.equal(p, before[n]) for n, p in value.named_parameters() if "lora_" in n)
    now = base_state(run.model)
    assert all(torch.equal(base[n], now[n]) for n in base)


def test_a_run_folder_from_before_the_trainer_sections_shows_no_changes():
    from multiagent_rl.config import changed_settings

    before = load_config(None, []).model_dump()
    del before["grpo"], before["critic"]
    before.update(scale_rewards=False, reward_source="agent", credit="outcome", gamma=1.0)  # the flat keys of then
    assert changed_settings(before, load_config(None, ["grpo.scale_rewards=false"])) == {}
    assert list(changed_settings(before, load_config(None, []))) == ["grpo"]
