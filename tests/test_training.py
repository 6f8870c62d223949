"""The training loop on the tiny model with a text-dependent reward: what one step changes
and what it must not, shared vs separate adapter gradients, resume, checkpoints, metrics,
and no-op steps that must look like no-ops."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multiagent_rl import (
    Episode,
    Role,
    Scenario,
    Task,
    complete,
    individual_rewards,
    read_episodes,
    team_reward,
)
from multiagent_rl.config import load_config
from multiagent_rl.rollout import rollout
from trainers.checkpoint import resumable_checkpoint
from trainers.loop import Run, team_reward_stats
from trainers.policy import Sample, UpdateSettings, policy_update

AGENTS = ["solver", "critic"]


def make_task(rng: random.Random) -> Task:
    n = rng.randint(0, 10**6)
    return Task(key=f"n{n}", prompt=f"Say something about {n}.", answer=str(n))


def text_reward(task: Task, episode) -> dict[str, float]:
    # the length of each agent's own text: random completions differ, so groups carry signal
    return individual_rewards({t.agent: len(t.message.text) / 40 for t in episode.turns})


def constant_reward(task: Task, episode) -> dict[str, float]:
    return team_reward(1.0, AGENTS)


def duo(reward=text_reward) -> Scenario:
    return Scenario(
        name="duo",
        roles=[Role("solver", "Solve it."), Role("critic", "Criticise it.")],
        graph=complete(AGENTS),
        schedule=[AGENTS],
        make_task=make_task,
        reward=reward,
        max_new_tokens=4,
    )


def config(*overrides: str):
    return load_config(
        None,
        [
            "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2",
            "group_size=3", "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01", *overrides,
        ],
    )


def lora_state(model, adapter: str | None = None) -> dict[str, torch.Tensor]:
    marker = f".{adapter}." if adapter else ""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n and marker in n}


def base_state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items() if "lora_" not in n}


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def informative(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.advantage != 0.0 and s.completion_ids]


class GradRecorder(torch.optim.SGD):
    """An optimizer that records the gradients it is asked to apply, and applies nothing."""

    def __init__(self, model):
        self.names = {id(p): n for n, p in model.named_parameters()}
        super().__init__([p for p in model.parameters() if p.requires_grad], lr=0.0)
        self.grads: dict[str, torch.Tensor] = {}

    def step(self, closure=None):
        self.grads = {
            self.names[id(p)]: p.grad.detach().clone()
            for group in self.param_groups for p in group["params"] if p.grad is not None
        }


NO_CLIP = UpdateSettings(loss_aggregation="token_mean", max_grad_norm=1e12, micro_batch_size=64)


def recorded_grads(run: Run, samples: list[Sample]) -> dict[str, torch.Tensor]:
    recorder = GradRecorder(run.model)
    policy_update(run.model, recorder, samples, NO_CLIP, run.tokenizer.pad_token_id)
    return recorder.grads


def rollout_samples(run: Run, step: int = 1) -> tuple[list[Sample], list[str]]:
    """Samples of one step's rollout and the agent of each."""
    batch = rollout(run.scenario, run.backend, run.tasks_for_step(step), group_size=run.config.group_size,
                    adapters=run.agent_adapters, seed=step)
    samples, _ = run.trainer.make_samples(batch)
    return samples, [s.agent for s in batch.samples]


# ----- one step ---------------------------------------------------------------------------
def test_a_step_trains_every_adapter_and_leaves_base_weights_bit_identical(single_thread, tmp_path):
    run = Run(config(), tmp_path, scenario=duo())
    base_before = base_state(run.model)
    initial = {a: lora_state(run.model, a) for a in AGENTS}
    metrics = run.train_step(1).metrics()
    assert metrics["update/skipped"] == 0.0 and metrics["update/informative_samples"] > 0
    for adapter in AGENTS:
        after = lora_state(run.model, adapter)
        assert after.keys() == initial[adapter].keys() and len(after) == 2 * 7 * 2  # A, B x 7 modules x 2 layers
        # LoRA B starts at 0, so step 1 moves every B (lora_A's gradient is B^T... = 0 on step 1)
        unchanged = [n for n in after if "lora_B" in n and torch.equal(after[n], initial[adapter][n])]
        assert not unchanged, f"{adapter}: step 1 left {unchanged[:3]} unchanged"
    run.train_step(2)
    for adapter in AGENTS:
        after = lora_state(run.model, adapter)
        unchanged = [n for n in after if torch.equal(after[n], initial[adapter][n])]
        assert not unchanged, f"{adapter}: two steps left {unchanged[:3]} unchanged"
    base_after = base_state(run.model)
    assert base_after.keys() == base_before.keys()
    changed = [n for n in base_before if not torch.equal(base_before[n], base_after[n])]
    assert not changed, f"base weights changed: {changed[:3]}"
    assert all(p.requires_grad == ("lora_" in n) for n, p in run.model.named_parameters())


def test_shared_adapter_learns_from_both_roles(single_thread, tmp_path):
    run = Run(config("adapters=shared"), tmp_path, scenario=duo())
    assert run.agent_adapters == {"solver": "shared", "critic": "shared"}
    assert list(run.model.peft_config) == ["shared"]
    samples, agents = rollout_samples(run)
    assert {s.adapter for s in samples} == {"shared"}
    by_role = {a: [s for s, who in zip(samples, agents, strict=True) if who == a] for a in AGENTS}
    for role in AGENTS:
        assert informative(by_role[role]), f"no informative {role} samples; pick another seed"
    g_all = recorded_grads(run, samples)
    g_role = {role: recorded_grads(run, by_role[role]) for role in AGENTS}
    tokens = {role: sum(len(s.completion_ids) for s in informative(by_role[role])) for role in AGENTS}
    total = sum(tokens.values())
    assert g_all.keys() == g_role["solver"].keys() == g_role["critic"].keys()
    lora_b = [n for n in g_all if "lora_B" in n]
    assert lora_b
    for role in AGENTS:
        assert sum(float(g_role[role][n].norm()) for n in lora_b) > 0, f"{role} gives the shared adapter no gradient"
    # token_mean over the whole batch: the batch gradient is the token-weighted sum of each role's
    for n in g_all:
        mixed = g_role["solver"][n] * tokens["solver"] + g_role["critic"][n] * tokens["critic"]
        assert torch.allclose(g_all[n] * total, mixed, rtol=1e-4, atol=1e-6), n


def test_separate_adapters_do_not_leak(single_thread, tmp_path):
    run = Run(config("weight_decay=0.1"), tmp_path, scenario=duo())
    assert run.agent_adapters == {"solver": "solver", "critic": "critic"}
    samples, _ = rollout_samples(run)
    solver_only = [s for s in samples if s.adapter == "solver"]
    assert informative(solver_only) and informative([s for s in samples if s.adapter == "critic"])
    # gradients: only the solver's own samples reach the solver's weights, nothing reaches the critic's
    g_all = recorded_grads(run, samples)
    g_solver = recorded_grads(run, solver_only)
    assert g_solver and all(".solver." in n for n in g_solver)
    assert {n for n in g_all if ".critic." in n}
    t_all = sum(len(s.completion_ids) for s in informative(samples))
    t_solver = sum(len(s.completion_ids) for s in informative(solver_only))
    for n, g in g_solver.items():
        assert torch.allclose(g_all[n] * t_all, g * t_solver, rtol=1e-4, atol=1e-6), n
    # weights: after an update of both (so AdamW has momentum for the critic), a solver-only
    # update leaves the critic bit-identical even with weight decay
    settings = UpdateSettings(max_grad_norm=1.0)
    policy_update(run.model, run.optimizer, samples, settings, run.tokenizer.pad_token_id)
    critic, solver = lora_state(run.model, "critic"), lora_state(run.model, "solver")
    policy_update(run.model, run.optimizer, solver_only, settings, run.tokenizer.pad_token_id)
    assert all(torch.equal(t, lora_state(run.model, "critic")[n]) for n, t in critic.items())
    assert any(not torch.equal(t, lora_state(run.model, "solver")[n]) for n, t in solver.items())


# ----- a whole run, resume, checkpoints, metrics ----------------------------------------------
@pytest.fixture(scope="module")
def run_a(single_thread, tmp_path_factory):
    """Two uninterrupted steps, a checkpoint after each."""
    run_dir = tmp_path_factory.mktemp("run-a")
    run = Run(config("steps=2", "save_every=1"), run_dir, scenario=duo())
    summary = run.train()
    return run, summary


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


def test_resume_replays_the_uninterrupted_run(run_a, tmp_path):
    run, summary = run_a
    assert summary["resumed_from"] is None and summary["steps"] == 2
    first = Run(config("steps=1", "save_every=1"), tmp_path, scenario=duo())
    assert first.train()["steps"] == 1
    resumed = Run(config("steps=2", "save_every=1"), tmp_path, scenario=duo())
    summary_b = resumed.train()
    assert summary_b["resumed_from"] == 1 and summary_b["steps"] == 2
    lines_a, lines_b = metric_lines(run.run_dir), metric_lines(tmp_path)
    assert [m["step"] for m in lines_b] == [0, 1, 2]
    step2_a = next(m for m in lines_a if m["step"] == 2)
    step2_b = next(m for m in lines_b if m["step"] == 2)
    assert without_timing(step2_a) == without_timing(step2_b)
    texts = [
        [[t.message.text for t in ep.turns] for ep in read_episodes(d / "episodes" / "step-000002.msgpack").episodes]
        for d in (run.run_dir, tmp_path)
    ]
    assert texts[0] == texts[1] and len(texts[0]) == 6
    final_a, final_b = lora_state(run.model), lora_state(resumed.model)
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[n], final_b[n]) for n in final_a)


def test_checkpoints_hold_no_pickle(run_a):
    run, _ = run_a
    root = run.run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-1", "step-2"]  # no temporary folder left
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
        if p.suffix == ".safetensors":
            load_file(p)
        else:
            json.loads(p.read_text())
    step2 = root / "step-2"
    assert json.loads((step2 / "trainer_state.json").read_text())["step"] == 2
    assert sorted(p.name for p in (step2 / "adapters").iterdir()) == sorted(AGENTS)
    saved = load_file(step2 / "adapters" / "solver" / "adapter_model.safetensors")
    live = lora_state(run.model, "solver")
    assert len(saved) == len(live)
    assert all(any(torch.equal(t, v) for v in live.values()) for t in saved.values())
    assert resumable_checkpoint(run.run_dir) == ((2, step2), [])  # the newest verifies


REQUIRED = [
    "reward/team_mean", "reward/team_std", "reward/solver_mean", "reward/solver_std",
    "reward/critic_mean", "reward/critic_std", "loss/policy", "loss/kl", "policy/clip_fraction",
    "grad_norm", "perf/tokens_per_s", "perf/step_seconds", "groups/equal_reward_fraction",
    "completions/empty_fraction", "update/skipped",
]


def test_metrics_have_one_line_per_step_with_the_issue_keys(run_a):
    run, _ = run_a
    lines = metric_lines(run.run_dir)
    assert [m["step"] for m in lines] == [0, 1, 2]  # 0: the held-out evaluation before training
    assert {"eval/team_reward_mean", "eval/team_reward_se"} <= lines[0].keys()
    for m in lines[1:]:
        missing = [k for k in REQUIRED if k not in m]
        assert not missing, f"step {m['step']} lacks {missing}"
        for k in REQUIRED:
            assert isinstance(m[k], int | float) and math.isfinite(m[k]), (k, m[k])
        assert m["update/skipped"] == 0.0 and m["perf/step_seconds"] > 0 and m["perf/tokens_per_s"] > 0
    assert "eval/team_reward_mean" in lines[2]  # the last step is evaluated


def test_all_equal_rewards_show_a_skipped_update(single_thread, tmp_path):
    run = Run(config("steps=1"), tmp_path, scenario=duo(constant_reward))
    before = lora_state(run.model)
    run.train()
    m = metric_lines(tmp_path)[-1]
    assert m["step"] == 1
    assert m["update/skipped"] == 1.0
    assert m["groups/equal_reward_fraction"] == 1.0
    assert m["update/informative_samples"] == 0
    after = lora_state(run.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert resumable_checkpoint(tmp_path)[0][0] == 1  # a checkpoint with an empty optimizer state still saves


def test_a_skipped_step_still_logs_every_metric(single_thread, tmp_path):
    run = Run(config(), tmp_path, scenario=duo(constant_reward))
    metrics = run.train_step(1).metrics()
    assert metrics["update/skipped"] == 1.0
    assert not [k for k in REQUIRED if k not in metrics]


def test_empty_completions_are_visible_in_the_metrics(single_thread, tmp_path):
    run = Run(config(), tmp_path, scenario=duo())
    end = run.tokenizer.eos_token_id  # == pad for this tokenizer

    def always_end(module, inputs, output):
        output[..., end] = 1e4
        return output

    handle = run.model.base_model.model.lm_head.register_forward_hook(always_end)
    try:
        m = run.train_step(1).metrics()
    finally:
        handle.remove()
    assert m["completions/empty_fraction"] == 1.0
    assert m["groups/equal_reward_fraction"] == 1.0  # every text is empty, so every reward is 0
    assert m["update/skipped"] == 1.0


def test_update_uses_each_roles_sampling_temperature(single_thread, tmp_path, monkeypatch):
    from trainers import policy

    scenario = Scenario(
        name="duo",
        roles=[Role("solver", "Solve it.", temperature=0.5), Role("critic", "Criticise it.")],
        graph=complete(AGENTS), schedule=[AGENTS], make_task=make_task, reward=text_reward, max_new_tokens=4,
    )
    run = Run(config(), tmp_path, scenario=scenario)
    seen: dict[str, set[float]] = {}
    original = policy.window_logprobs

    def recording(model, samples, pad_id):
        seen.setdefault(model.active_adapter, set()).update(s.temperature for s in samples)
        return original(model, samples, pad_id)

    monkeypatch.setattr(policy, "window_logprobs", recording)
    assert run.train_step(1).metrics()["update/skipped"] == 0.0
    assert seen["critic"] == {1.0}
    assert seen["solver"] == {0.5}


def test_heldout_stats_grade_the_team_answer_apart_from_the_shaped_reward():
    def episode(team_answer, answer, rewards):
        task = Task(key=str(answer), prompt="", answer=answer)
        return Episode(episode_id="e", scenario="s", task=task, rewards=rewards, team_answer=team_answer)

    stats = team_reward_stats([
        episode("7", "7", {"a": 1.0, "b": 0.5}),   # right: team reward 0.75
        episode("8", "7", {"a": 0.0, "b": 0.5}),   # wrong, though b earned its own share
        episode(None, "3", {"a": 0.0, "b": 0.0}),  # no answer counts as wrong
        episode("x", None, {"a": 1.0, "b": 1.0}),  # no reference: not graded
    ])
    assert stats["mean"] == pytest.approx((0.75 + 0.25 + 0 + 1) / 4)
    assert stats["accuracy"] == pytest.approx(1 / 3)
    assert math.isnan(team_reward_stats([episode("x", None, {"a": 1.0})])["accuracy"])


@pytest.mark.parametrize("parse, anneals", [(lambda text: text.strip() or None, True), (lambda text: None, False)])
def test_a_format_term_stops_paying_once_replies_are_well_formed(single_thread, tmp_path, parse, anneals):
    from multiagent_rl import RewardTerm, weighted

    def right(task: Task, episode) -> float:
        return float(any(t.message.text.strip() == task.answer for t in episode.turns))

    def well_formed(task: Task, episode) -> dict[str, float]:
        return {t.agent: float(bool(t.message.text.strip())) for t in episode.turns}

    scenario = Scenario(
        name="duo", roles=[Role("solver", "Solve it."), Role("critic", "Criticise it.")], graph=complete(AGENTS),
        schedule=[AGENTS], make_task=make_task, max_new_tokens=4, parse=parse,
        reward=weighted(RewardTerm("correct", right, 0.9), RewardTerm("format", well_formed, 0.1)),
    )
    run = Run(config("shaping.stop_when_invalid_below=0.5", "shaping.anneal_steps=2"), tmp_path, scenario=scenario)
    weights = [run.train_step(step).metrics()["shaping/weight"] for step in range(1, 5)]
    # No act hook, so an invalid reply is one the parse reads no answer from: random text is
    # never empty here, so with the first parse every reply is well formed from step 1 on.
    assert weights == ([1.0, 1.0, 0.5, 0.0] if anneals else [1.0] * 4)
