"""The examples run as a newcomer would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pettingzoo
import pytest

from multiagent_rl import Scenario, load_scenario
from multiagent_rl.branching import check_plan
from multiagent_rl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = ROOT / "examples" / "custom_scenario.py"


def test_custom_scenario_script_runs():
    out = subprocess.run(
        [sys.executable, str(CUSTOM)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "rewards: {'proposer': 1.0, 'checker': 1.0}" in out.stdout
    assert "[round 1] proposer -> checker" in out.stdout  # the ansi transcript
    assert "Message from proposer" in out.stdout  # what the checker saw
    assert "Traceback" not in out.stderr


def test_custom_scenario_loads_from_its_file():
    checker = load_scenario(f"{CUSTOM}:checker")
    assert isinstance(checker, Scenario)
    assert checker.name == "checker"
    assert checker.agents == ["proposer", "checker"]
    assert checker.schedule == [["proposer"], ["checker"]]
    env = checker.make_env(seed=0)
    assert isinstance(env, pettingzoo.ParallelEnv)
    env.reset(seed=0)
    answer = env.task.answer
    env.step({"proposer": "no idea"})
    _, rewards, terminations, _, _ = env.step({"checker": f"<answer>{answer}</answer>"})
    assert rewards == {"proposer": 1.0, "checker": 1.0}
    assert all(terminations.values())


def test_custom_scenario_wrong_answer_scores_zero():
    checker = load_scenario(f"{CUSTOM}:checker")
    env = checker.make_env(seed=1)
    env.reset(seed=1)
    env.step({"proposer": f"<answer>{env.task.answer}</answer>"})
    _, rewards, _, _, _ = env.step({"checker": "<answer>-1</answer>"})  # the checker has the last word
    assert rewards == {"proposer": 0.0, "checker": 0.0}


def test_custom_scenario_passes_the_pettingzoo_harness():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(load_scenario(f"{CUSTOM}:checker").make_env(seed=0), num_cycles=5)


def test_gpu_check_runs_its_checks_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-dry-run", "--model", "tiny", "--steps", "2",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all parameters and batches were on cpu" in done.stdout
    import json

    figures = json.loads(out.read_text())
    assert figures["step seconds per completion"] > 0 and figures["updates skipped"] <= 1


def test_gpu_check_without_a_gpu_says_so():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load_and_fit_their_scenario(path):
    config = load_config(path, [])
    scenario = load_scenario(config.scenario, **config.scenario_options)
    check_plan(config.rollout.branching, scenario)
