"""The centralised critic's options for LLM teams: a value warm-up that keeps the policy
still (and survives a resume), whitening only while the value explains little, a privileged
critic that reads the reference answer no policy sees, and the example config using them."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
import torch
from test_training import AGENTS, config, duo, lora_state, metric_lines

import trainers.critic
from multiagent_rl import Role, Scenario, Task, chain, team_reward
from multiagent_rl.config import ConfigError, load_config
from multiagent_rl.rollout import TurnSample
from trainers.critic import VALUE_ADAPTER, decision_points
from trainers.gae import whitens
from trainers.loop import Run

ROOT = Path(__file__).resolve().parent.parent


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(after[n], t) for n, t in before.items())


# ----- value warm-up -------------------------------------------------------------------------
def test_a_warmup_step_trains_the_value_only_and_the_next_one_the_policies(single_thread, tmp_path):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=2", "critic.value_warmup_steps=1"),
              tmp_path, scenario=duo())
    policies = {a: lora_state(run.model, a) for a in AGENTS}
    value = lora_state(run.model, VALUE_ADAPTER)
    head = {k: v.detach().clone() for k, v in run.trainer.value.head.state_dict().items()}

    first = run.train_step(1).metrics()
    assert first["critic/warmup"] == 1.0 and first["update/skipped"] == 1.0
    assert first["loss/policy"] == 0.0 and first["update/optimizer_steps"] == 0.0
    assert first["value/loss"] > 0
    for adapter in AGENTS:
        assert not changed(policies[adapter], lora_state(run.model, adapter)), f"{adapter} trained during the warm-up"
    assert not run.trainer.optimizer.state, "the policy optimizer stepped during the warm-up"
    assert changed(value, lora_state(run.model, VALUE_ADAPTER)), "the value adapter did not train"
    assert changed(head, run.trainer.value.head.state_dict()), "the value head did not train"

    second = run.train_step(2).metrics()
    assert second["critic/warmup"] == 0.0 and second["update/skipped"] == 0.0
    for adapter in AGENTS:
        assert changed(policies[adapter], lora_state(run.model, adapter)), f"{adapter} did not train after the warm-up"


def test_no_warmup_by_default(single_thread, tmp_path):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=2"), tmp_path, scenario=duo())
    m = run.train_step(1).metrics()
    assert m["critic/warmup"] == 0.0 and m["update/skipped"] == 0.0


def test_the_warmup_count_survives_a_resume(single_thread, tmp_path):
    settings = ("trainer=critic", "group_size=1", "tasks_per_step=2", "save_every=1", "critic.value_warmup_steps=2")
    Run(config(*settings, "steps=1"), tmp_path, scenario=duo()).train()
    state = tmp_path / "checkpoints" / "step-1" / "critic" / "state.json"
    assert json.loads(state.read_text())["updates"] == 1
    resumed = Run(config(*settings, "steps=3"), tmp_path, scenario=duo())
    assert resumed.train()["resumed_from"] == 1
    warmup = {m["step"]: m["critic/warmup"] for m in metric_lines(tmp_path) if "critic/warmup" in m}  # not eval lines
    assert warmup == {1: 1.0, 2: 1.0, 3: 0.0}  # a counter that restarted would warm up at step 3 too
    # A critic saved before the count was kept: it had learned once per step.
    saved = json.loads(state.read_text())
    del saved["updates"]
    state.write_text(json.dumps(saved))
    resumed.trainer.load(state.parent.parent)
    assert resumed.trainer.updates == 1


# ----- whitening by explained variance --------------------------------------------------------
def test_whitening_follows_the_explained_variance():
    assert whitens(0.9, True, None) and not whitens(0.9, False, None)  # None: normalize_advantages decides
    assert whitens(0.49, True, 0.5) and not whitens(0.5, True, 0.5) and not whitens(0.9, True, 0.5)
    assert whitens(-3.0, True, 0.5) and whitens(math.nan, True, 0.5)  # nothing explained, or not known yet
    assert not whitens(0.1, False, 0.5)  # normalize_advantages: false never whitens


def test_the_critic_switches_whitening_as_the_value_improves(single_thread, tmp_path, monkeypatch):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=4", "critic.whiten_below_explained_variance=0.5"),
              tmp_path, scenario=duo())
    scripted = iter([0.1, 0.8, math.nan, 0.3])  # the value's explained variance, step by step
    learn_values = run.trainer.learn_values

    def scripted_values(*args):
        advantages, metrics = learn_values(*args)
        return advantages, {**metrics, "value/explained_variance": next(scripted)}

    handed: list[list] = []

    def recording_update(model, optimizer, samples, *args, **kwargs):
        handed.append(list(samples))
        return real_update(model, optimizer, samples, *args, **kwargs)

    real_update = trainers.critic.policy_update
    monkeypatch.setattr(run.trainer, "learn_values", scripted_values)
    monkeypatch.setattr(trainers.critic, "policy_update", recording_update)
    whitened = []
    for step in range(1, 5):
        m = run.train_step(step).metrics()
        whitened.append(m["critic/whitened"])
        advantages = [s.advantage for s in handed[-1]]
        if m["critic/whitened"]:  # each agent's advantages at mean 0, std 1
            for agent in AGENTS:
                mine = [s.advantage for s in handed[-1] if s.adapter == agent]
                assert statistics.fmean(mine) == pytest.approx(0.0, abs=1e-5)
                assert statistics.pstdev(mine) == pytest.approx(1.0, abs=1e-3)
        else:  # the raw residuals R - V, at their own size
            assert statistics.fmean(abs(a) for a in advantages) == pytest.approx(m["advantage/abs_mean"], rel=1e-5)
            assert statistics.pstdev(advantages) < 0.5
    assert whitened == [1.0, 0.0, 1.0, 1.0]


# ----- a privileged critic ---------------------------------------------------------------------
def secret_task(rng: random.Random) -> Task:
    # The answer is nowhere in what the agents see.
    return Task(key=f"s{rng.randint(0, 10**6)}", prompt="Guess the word.", answer=f"zebra{rng.randint(10, 99)}")


def secret() -> Scenario:
    # Two rounds: the second state holds a message, so truncation has something to cut.
    return Scenario(
        name="secret", roles=[Role(a, "Say a word.") for a in AGENTS], graph=chain(AGENTS), schedule=[["solver"], ["critic"]],
        make_task=secret_task, reward=lambda task, ep: team_reward(float(len(ep.turns[-1].message.text) % 2), AGENTS),
        max_new_tokens=6,
    )


def value_and_policy_inputs(run: Run) -> tuple[list[str], list[str], list[str]]:
    """One step's states as the value model encoded them, every policy prompt, and the answers."""
    encoded, prompts, answers = [], [], []
    encode, update = run.trainer.value.encode, run.trainer.update

    def recording_encode(texts):
        rows = encode(texts)
        encoded.extend(run.tokenizer.decode(r) for r in rows)
        return rows

    def recording_update(batch):
        prompts.extend(run.tokenizer.decode(s.prompt_ids) for s in batch.samples)
        answers.extend(ep.task.answer for ep in batch.episodes)
        return update(batch)

    run.trainer.value.encode, run.trainer.update = recording_encode, recording_update
    run.train_step(1)
    return encoded, prompts, answers


@pytest.mark.parametrize("privileged", [True, False])
def test_only_a_privileged_critic_reads_the_reference_answer(single_thread, tmp_path, privileged):
    run = Run(config("trainer=critic", "group_size=1", "tasks_per_step=3", "critic.max_state_tokens=28",
                     f"critic.privileged={str(privileged).lower()}"), tmp_path, scenario=secret())
    encoded, prompts, answers = value_and_policy_inputs(run)
    assert len(encoded) == 2 * len(answers) and len(prompts) == 2 * len(answers)  # two points, two turns per episode
    if privileged:
        for k, answer in enumerate(answers):  # an episode's points come in order, two each
            for state in encoded[2 * k : 2 * k + 2]:
                assert f"Reference answer: {answer}\nActing now:" in state, state
        # the answer survives truncation: the value keeps a state's last tokens
        assert any(not state.startswith("Task:") for state in encoded)
    else:
        assert not any("Reference answer" in state or any(a in state for a in answers) for state in encoded)
    assert not any("Reference answer" in p or any(a in p for a in answers) for p in prompts)


def test_decision_points_add_the_answer_only_where_the_task_has_one():
    def turn(episode: int, agent: str, round_index: int) -> TurnSample:
        return TurnSample(episode=episode, group=episode, agent=agent, adapter=agent, round=round_index, prompt_ids=[1],
                          completion_ids=[2], logprobs=[0.0], finish_reason="stop", turn=round_index)

    turns = [turn(0, "a", 0), turn(0, "b", 1), turn(1, "a", 0)]
    _, _, texts = decision_points(turns, {(0, 0): "s0", (0, 1): "s1", (1, 0): "t0"}, {0: "42"})
    assert texts == ["s0\nReference answer: 42\nActing now: a", "s1\nReference answer: 42\nActing now: b",
                     "t0\nActing now: a"]


# ----- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("critic.value_warmup_steps", "-1"), ("critic.whiten_below_explained_variance", "1.5"),
    ("critic.whiten_below_explained_variance", "0"), ("critic.privileged", "maybe"),
])
def test_a_bad_critic_option_is_an_error_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config(None, [f"{key}={value}"])


def test_the_defaults_leave_the_critic_as_it_was():
    critic = load_config(None, []).critic
    assert (critic.value_warmup_steps, critic.whiten_below_explained_variance, critic.privileged) == (0, None, False)
    assert critic.normalize_advantages and critic.lr == 5e-4


def test_the_planner_critic_example_uses_the_options():
    critic = load_config(ROOT / "examples" / "planner_critic.yaml", []).critic
    assert critic.value_warmup_steps > 0 and critic.privileged and critic.whiten_below_explained_variance is not None
    assert critic.lr == 2 * 5e-4  # above the scenarios' policy lr
