"""Truncated importance weights to the sampler's policy: a token sampled by a policy that
gave it a lower log-prob than the trainer's counts more, up to the cap; where sampler and
trainer agree nothing changes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from multiagent_rl.config import ConfigError, load_config
from tests.test_training import NO_CLIP, GradRecorder, config, duo, informative, rollout_samples
from trainers.loop import Run
from trainers.policy import importance_weights, policy_update, window_logprobs


def test_weights_are_the_ratio_truncated_at_the_cap():
    old = torch.tensor([[0.0, -1.0, -2.0]])
    sampled = torch.tensor([[0.0, -1.5, -5.0]])
    assert torch.allclose(importance_weights(old, sampled, cap=2.0), torch.tensor([[1.0, math.exp(0.5), 2.0]]))


def trainer_logprobs(run: Run, samples):
    """Each sample with the trainer's own log-probs of its completion as the sampler's."""
    out = []
    for s in samples:
        run.model.set_adapter(s.adapter)
        with torch.no_grad():
            row = window_logprobs(run.model, [s], run.tokenizer.pad_token_id)[0]
        out.append(replace(s, logprobs=row[-len(s.completion_ids):].tolist()))
    return out


def grads_and_metrics(run: Run, samples, cap):
    recorder = GradRecorder(run.model)
    metrics = policy_update(run.model, recorder, samples, replace(NO_CLIP, importance_cap=cap), run.tokenizer.pad_token_id)
    return recorder.grads, metrics


def test_the_loss_is_weighed_by_the_truncated_ratio_to_the_sampler(single_thread, tmp_path):
    run = Run(config(), tmp_path, scenario=duo())
    samples, _ = rollout_samples(run)
    exact = trainer_logprobs(run, informative(samples))
    plain, _ = grads_and_metrics(run, exact, None)
    same, metrics = grads_and_metrics(run, exact, 2.0)
    assert metrics["policy/importance_weight_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["policy/importance_truncated_fraction"] == 0.0
    for name, g in plain.items():
        assert torch.allclose(same[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max())), name
    # The sampler gave every token a lower probability: the tokens weigh 1.5x, then 2x at most.
    lower = [replace(s, logprobs=[x - math.log(1.5) for x in s.logprobs]) for s in exact]
    weighed, metrics = grads_and_metrics(run, lower, 2.0)
    assert metrics["policy/importance_weight_mean"] == pytest.approx(1.5, rel=1e-4)
    much_lower = [replace(s, logprobs=[x - math.log(3.0) for x in s.logprobs]) for s in exact]
    capped, metrics = grads_and_metrics(run, much_lower, 2.0)
    assert metrics["policy/importance_truncated_fraction"] == 1.0
    for name, g in plain.items():
        tolerance = 1e-4 * float(g.abs().max())  # float32 sums in another order
        assert torch.allclose(weighed[name], 1.5 * g, rtol=1e-3, atol=tolerance), name
        assert torch.allclose(capped[name], 2.0 * g, rtol=1e-3, atol=tolerance), name


def test_the_cap_is_a_setting():
    assert load_config(None, ["importance_sampling_cap=3"]).importance_sampling_cap == 3.0
    assert load_config(None, []).importance_sampling_cap == 2.0  # on by default, as TRL's and verl's
    assert load_config(None, ["importance_sampling_cap=null"]).importance_sampling_cap is None
    with pytest.raises(ConfigError, match="importance_sampling_cap"):
        load_config(None, ["importance_sampling_cap=0"])
