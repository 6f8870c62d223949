"""token_budget: a run-wide compute budget in generated tokens. Every step's metrics carry
the step's and the run's count, the loop stops after the step that reaches the budget, and
the count survives a resume (trainer_state.json keeps it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from duo_run import KeyedBackend, duo  # noqa: E402  (completions of 1-4 tokens, cheap and reproducible)

from multiagent_rl import read_episodes  # noqa: E402
from multiagent_rl.config import ConfigError, load_config  # noqa: E402
from trainers.loop import Run  # noqa: E402
from trainers.metrics import RunBudget  # noqa: E402

# 2 tasks x 3 samples x 2 agents = 12 completions a step, 1 to 4 tokens each: 12..48 tokens.
PER_STEP_MAX = 48


def start(run_dir: Path, *overrides: str) -> Run:
    config = load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=3",
        "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01", "mixed_precision=no", "save_every=1", *overrides,
    ])
    run = Run(config, run_dir, scenario=duo())
    run.team.backend = KeyedBackend(run.tokenizer, list(run.model.peft_config))
    return run


def steps_of(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["step"] > 0]


def test_a_small_token_budget_stops_the_run_after_the_step_that_reaches_it(single_thread, tmp_path):
    budget = PER_STEP_MAX + 12  # at least two steps, at most five
    summary = start(tmp_path, "steps=8", f"token_budget={budget}").train()
    lines = steps_of(tmp_path)
    assert 2 <= summary["steps"] == len(lines) < 8
    assert "token budget" in summary["stopped"] and summary["after"]  # the last step is still evaluated
    totals = [m["rollout/generated_tokens_total"] for m in lines]
    assert totals[-1] >= budget > totals[-2]
    running = 0
    for m in lines:  # the total is the running sum of each step's count, which is every turn's tokens
        running += m["rollout/generated_tokens"]
        assert m["rollout/generated_tokens_total"] == running
        played = read_episodes(tmp_path / "episodes" / f"step-{m['step']:06d}.msgpack").episodes
        assert m["rollout/generated_tokens"] == sum(t.completion_tokens for ep in played for t in ep.turns)
    evaluated = read_episodes(tmp_path / "episodes" / "eval-step-000000.msgpack").episodes
    assert sum(t.completion_tokens for ep in evaluated for t in ep.turns) > 0  # generated, yet not counted
    saved = json.loads((tmp_path / "checkpoints" / f"step-{summary['steps']}" / "trainer_state.json").read_text())
    assert saved["generated_tokens_total"] == totals[-1]
    # Run again: the budget is spent, so not one more step.
    again = start(tmp_path, "steps=8", f"token_budget={budget}").train()
    assert again["steps"] == summary["steps"] and "token budget" in again["stopped"]
    assert len(steps_of(tmp_path)) == len(lines)


def test_a_resume_continues_the_count(single_thread, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    start(whole, "steps=3").train()
    start(cut, "steps=1").train()
    assert start(cut, "steps=3").train()["resumed_from"] == 1
    totals = {d: [m["rollout/generated_tokens_total"] for m in steps_of(d)] for d in (whole, cut)}
    assert totals[cut] == totals[whole] and totals[whole][0] < totals[whole][1] < totals[whole][2]


def test_a_checkpoint_from_before_the_count_counts_from_zero(single_thread, tmp_path):
    start(tmp_path, "steps=1").train()
    step1 = tmp_path / "checkpoints" / "step-1"
    state = json.loads((step1 / "trainer_state.json").read_text())
    del state["generated_tokens_total"]
    (step1 / "trainer_state.json").write_text(json.dumps(state))
    (step1 / "manifest.json").unlink()  # an older version's checkpoint: no manifest, no count
    start(tmp_path, "steps=2").train()
    second = steps_of(tmp_path)[-1]
    assert second["step"] == 2 and second["rollout/generated_tokens_total"] == second["rollout/generated_tokens"]


def test_the_budgets_say_why_they_stop():
    tokens = RunBudget(minutes=None, tokens=100)
    assert tokens.spent(0) is None and tokens.spend(1.0, 99) is None
    assert tokens.spend(1.0, 100) == "token budget of 100 generated tokens reached (100)"
    clock = RunBudget(minutes=1, tokens=None)
    assert clock.spend(30.0, 10**9) is None  # 30 s + half a step (15 s) fits in 60 s
    assert clock.spend(20.0, 10**9) == "time budget of 1 min used"  # 50 s + 12.5 s would overrun it
    with pytest.raises(ConfigError, match="token_budget"):
        load_config(None, ["token_budget=0"])
