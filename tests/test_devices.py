"""Every tensor the rollout and the update feed the model is created on the model's device.

There is no second device on this machine, so the test moves the *default* device instead:
with `torch.set_default_device("meta")`, any tensor built without an explicit device lands
on `meta` while the model stays on the CPU. A forward pre-hook on every module then records
each input whose device differs from the module's weights; code that builds a batch on the
default device either trips the hook or fails outright on a meta tensor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from multiagent_rl.config import load_config
from trainers.loop import Run
from trainers.runtime import resolve_dtype

sys.path.insert(0, str(Path(__file__).resolve().parent))
from duo_run import duo  # noqa: E402


def device_checks(model) -> list[str]:
    """Install the pre-hooks; the returned list fills with every mismatch seen."""
    seen: list[str] = []

    def check(module, args, kwargs):
        weights = next(module.parameters(recurse=False), None)
        if weights is None:
            return
        for value in [*args, *kwargs.values()]:
            if torch.is_tensor(value) and value.device != weights.device:
                seen.append(f"{type(module).__name__}: input on {value.device}, weights on {weights.device}")

    for module in model.modules():
        module.register_forward_pre_hook(check, with_kwargs=True)
    return seen


@pytest.fixture
def run(single_thread, tmp_path):
    config = load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=3",
        "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01", "epochs=2", "beta=0.1",
    ])
    return Run(config, tmp_path, scenario=duo())


def test_rollout_update_and_eval_build_every_tensor_on_the_models_device(run):
    mismatches = device_checks(run.model)
    torch.set_default_device("meta")
    try:
        metrics = run.train_step(1).metrics()  # epochs=2 and beta>0: the old-log-prob and reference passes too
        result = run.evaluate(step=1)
    finally:
        torch.set_default_device(None)
    assert not mismatches, mismatches[:5]
    assert metrics["update/skipped"] == 0.0 and metrics["update/informative_samples"] > 0
    assert result["n"] == 2


def test_the_check_catches_a_batch_built_on_the_default_device(run):
    mismatches = device_checks(run.model)
    ids = torch.tensor([[1, 2, 3]])  # built before the switch: on the CPU, as the weights
    torch.set_default_device("meta")
    try:
        run.model(input_ids=ids)
        assert not mismatches
        try:
            run.model(input_ids=torch.tensor([[1, 2, 3]]))  # default device: meta
        except (RuntimeError, NotImplementedError):
            pass  # an op that refuses meta inputs fails the same way a real device mismatch would
    finally:
        torch.set_default_device(None)
    assert mismatches and all("meta" in m for m in mismatches)


def test_metrics_record_the_device_processes_and_precision_in_use(run, tmp_path):
    run.config.steps = 1
    run.train()
    import json

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(line["runtime/device"] == "cpu" and line["runtime/processes"] == 1 for line in lines)
    assert all(line["runtime/mixed_precision"] == "bf16" and line["runtime/dtype"] == "float32" for line in lines)


def test_auto_dtype_is_bfloat16_on_a_gpu_and_float32_on_a_cpu():
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("float16", torch.device("cpu")) == "float16"


def test_a_critic_step_builds_every_tensor_on_the_models_device(single_thread, tmp_path):
    config = load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=2",
        "eval_episodes=2", "eval_every=0", "lora.rank=4", "trainer=critic", "critic.epochs=2",
        "critic.normalize_targets=true", "critic.group_weight=0.5",
    ])
    run = Run(config, tmp_path, scenario=duo())
    mismatches = device_checks(run.model)
    head = device_checks(run.trainer.value.head)
    torch.set_default_device("meta")
    try:
        metrics = run.train_step(1).metrics()  # epochs=2: the second value pass reuses the first's targets
    finally:
        torch.set_default_device(None)
    assert not mismatches and not head, (mismatches + head)[:5]
    assert metrics["update/skipped"] == 0.0 and metrics["value/loss"] > 0
