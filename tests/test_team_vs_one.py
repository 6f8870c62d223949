"""benchmarks/team_vs_one: both sides of a comparison train on one rule, the best rate is
picked on training rewards only, and the report tables and plots real run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import published, team_vs_one
from multiagent_rl import load_scenario
from multiagent_rl.config import load_config
from trainers.loop import Run


def settings(command: list[str]) -> dict[str, str]:
    return dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--set")


@pytest.mark.parametrize("task", sorted(team_vs_one.TASKS))
def test_both_sides_train_on_one_rule(task, tmp_path):
    team = settings(team_vs_one.train_command(task, "team", "5e-4", 0, tmp_path))
    solo = settings(team_vs_one.train_command(task, "solo", "5e-4", 0, tmp_path))
    differ = {k for k in team.keys() | solo.keys() if team.get(k) != solo.get(k)}
    assert differ <= {k for k in differ if k.startswith("scenario_options.")} | {"eval_every"}
    assert team["token_budget"] == solo["token_budget"] == str(team_vs_one.TOKEN_BUDGET)
    assert team["time_budget_minutes"] == "null" and team["shaping.stop_when_invalid_below"] == "0.1"
    options = {k.split(".", 1)[1]: yaml.safe_load(v) for k, v in solo.items() if k.startswith("scenario_options.")}
    twin, original = load_scenario(task, **options), load_scenario(task)
    assert len(twin.model_agents) == 1 < len(original.model_agents)
    assert [t.key for t in twin.heldout_tasks(10)] == [t.key for t in original.heldout_tasks(10)]


def fake_run(root: Path, name: str, lr: float, seed: int, train_correct: float, heldout: float) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"scenario": "lookup", "scenario_options": {}, "lr": lr, "seed": seed}))
    lines = [{"step": 0, "eval/team_accuracy": 0.1, "eval/team_reward_n": 50, "eval/team_reward_mean": 0.1}]
    lines += [{"step": s, "rollout/generated_tokens_total": 100 * s, "reward/asker/correct": train_correct,
               "reward/keeper/correct": train_correct} for s in range(1, 9)]
    lines += [{"step": 8, "eval/team_accuracy": heldout, "eval/team_reward_n": 50, "eval/team_reward_mean": heldout}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def test_the_best_rate_is_picked_on_training_rewards_not_on_the_held_out_tasks(tmp_path):
    fake_run(tmp_path, "a", 2.5e-4, 0, train_correct=0.2, heldout=0.9)
    fake_run(tmp_path, "b", 5e-4, 0, train_correct=0.6, heldout=0.3)
    fake_run(tmp_path, "c", 1e-3, 0, train_correct=0.4, heldout=0.5)
    fake_run(tmp_path, "d", 1e-3, 1, train_correct=0.9, heldout=0.9)  # a second seed does not vote
    assert team_vs_one.best_rates(tmp_path) == {("lookup", "team"): 5e-4}
    points = team_vs_one.curve(team_vs_one.metrics(tmp_path / "b"))
    assert [p[:2] for p in points] == [(0, 0.1), (800, 0.3)]
    assert all(low <= acc <= high for _, acc, low, high in points)


def test_the_report_tables_and_plots_two_real_runs(single_thread, tmp_path):
    for side, options in (("team", []), ("solo", ["scenario_options.solo=true"])):
        config = load_config(None, [
            "scenario=lookup", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=2",
            "eval_episodes=3", "eval_every=1", "lora.rank=4", "steps=2", "mixed_precision=no", *options])
        Run(config, tmp_path / "runs" / side).train()
    out = tmp_path / "report"
    assert team_vs_one.report(tmp_path / "runs", out) == {"runs": 2, "out": str(out)}
    rows = json.loads((out / "team-vs-one.json").read_text())
    assert sorted(r["side"] for r in rows) == ["solo", "team"] and all(r["best rate"] for r in rows)
    assert all(r["steps"] == 2 and r["training tokens"] > 0 and r["held-out tasks solved"].endswith("/3") for r in rows)
    assert (out / "team-vs-one.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "team-vs-one.md").read_text()
    assert "| lookup | solo |" in text and "| lookup | team |" in text
    published_rows = team_vs_one.published_rows(rows, commit="abc1234", date="2026-12-07", beside="nothing")
    for row in published_rows:  # ready for benchmarks/published.yaml
        assert published.Row.model_validate(row).topics == ["team-vs-one-fair"]
    assert len({row["id"] for row in published_rows}) == 2
