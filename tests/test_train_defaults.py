"""A scenario's recommended training settings, applied under the user's config file and
--set, with config.yaml saying where each value came from; and `play --run` with a trained
run's adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from multiagent_rl import (
    Role,
    Scenario,
    ScenarioError,
    Task,
    from_edges,
    load_scenario,
    team_reward,
)
from multiagent_rl.cli import main
from multiagent_rl.config import load_config

TINY = ["--set", "model=tiny", "--set", "steps=1", "--set", "tasks_per_step=1", "--set", "group_size=2",
        "--set", "eval_episodes=1", "--set", "log_with=[]", "--set", "progress=false", "--set", "max_new_tokens=3",
        "--set", "lora.rank=2"]


def test_scenario_defaults_sit_under_the_config_file_and_set(tmp_path):
    defaults = {"lr": 5e-4, "group_size": 6, "temperature": 0.7, "lora.rank": 16}
    (tmp_path / "c.yaml").write_text("group_size: 4\n")
    sources: dict[str, str] = {}
    config = load_config(tmp_path / "c.yaml", ["temperature=0.9"], scenario_defaults=defaults, sources=sources)
    assert (config.lr, config.group_size, config.temperature, config.lora.rank) == (5e-4, 4, 0.9, 16)
    assert sources["lr"] == "the scenario's recommended settings" and sources["temperature"] == "--set"
    assert sources["group_size"].startswith("config file") and "beta" not in sources


def test_a_scenario_with_a_bad_default_is_refused_at_declaration():
    with pytest.raises(ScenarioError, match="train_defaults names 'lrr'"):
        Scenario(name="x", roles=[Role("a", "A.")], graph=from_edges([], agents=["a"]), schedule=[["a"]],
                 make_task=lambda rng: Task(key="k", prompt="p"), reward=lambda t, e: team_reward(1.0, ["a"]),
                 train_defaults={"lrr": 1.0})


def test_train_applies_the_scenarios_defaults_and_config_yaml_names_their_source(single_thread, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "debate", "--out", str(run), *TINY]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    debate = load_scenario("debate").train_defaults
    assert saved["lr"] == debate["lr"] and saved["temperature"] == debate["temperature"]
    assert saved["group_size"] == 2  # --set wins
    header = (run / "config.yaml").read_text().split("\n")
    assert "#   lr: the scenario's recommended settings" in header and "#   group_size: --set" in header
    assert "#   scenario: the command line" in header


def test_the_learning_configs_are_the_scenarios_defaults():
    root = Path(__file__).resolve().parents[1]
    for scenario, file in (("debate", "debate_learning.yaml"), ("division_of_labour", "division_learning.yaml")):
        from_file = load_config(root / "examples" / file)
        from_defaults = load_config(None, [f"scenario={scenario}"], scenario_defaults=load_scenario(scenario).train_defaults)
        keep = set(from_file.model_dump()) - {"scenario_options", "model"}
        assert {k: from_file.model_dump()[k] for k in keep} == {k: from_defaults.model_dump()[k] for k in keep}, scenario


def test_play_with_a_run_uses_its_trained_adapters(single_thread, tmp_path, capsys):
    duo = f"{Path(__file__).resolve().parent / 'duo_run.py'}:duo"  # rewards always differ: every step updates
    run = tmp_path / "run"
    # A large lr on a tiny model: three steps move its samples away from the base model's.
    assert main(["train", duo, "--out", str(run), *TINY, "--set", "lr=0.5", "--set", "steps=3",
                 "--set", "tasks_per_step=2"]) == 0
    capsys.readouterr()
    assert main(["play", duo, "--run", str(run), "--episodes", "4", "--out", str(tmp_path / "p1")]) == 0
    trained = capsys.readouterr()
    assert "adapters of" in trained.err and "step-3" in trained.err
    assert main(["play", duo, "--model", "tiny", "--episodes", "4", "--out", str(tmp_path / "p2")]) == 0
    base = capsys.readouterr()

    def said(text: str) -> list[str]:
        return [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("[round")]

    assert said(trained.out) and said(trained.out) != said(base.out)  # same tasks and seed, other weights
    assert main(["play", duo, "--run", str(run), "--checkpoint", "step-9"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
