"""The KL term of the policy update: its direction (k2's gradient is that of KL(policy ||
reference), k3's that of KL(reference || policy)), that it acts on tied samples too, and a
reference adapter in place of the base model. A toy categorical and a tiny peft model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from multiagent_rl.adapters import LoraSettings, adapter_parameters, attach_adapters
from multiagent_rl.models import tiny_model
from tests.test_training import GradRecorder
from trainers.policy import (
    Sample,
    UpdateSettings,
    completion_mask,
    kl_penalty,
    kl_to_reference,
    policy_update,
    window_logprobs,
)

PAD = 2
KL_ONLY = UpdateSettings(beta=1.0, loss_aggregation="token_mean", max_grad_norm=1e12, micro_batch_size=64,
                         importance_cap=None)


# ----- the direction of the KL term, exactly ------------------------------------------------
def expected_gradient(per_token, theta: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """E_{x ~ pi}[grad per_token(log pi(x), log ref(x))], summed exhaustively over a vocabulary
    of 3: what the loss's gradient is on average over tokens the policy samples."""
    logp = torch.log_softmax(theta, 0)  # (3,)
    ref = torch.log_softmax(ref_logits, 0)
    loss = (logp.exp().detach() * per_token(logp, ref)).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    return grad


def exact_kl_gradient(theta: torch.Tensor, ref_logits: torch.Tensor, reverse: bool) -> torch.Tensor:
    logp, ref = torch.log_softmax(theta, 0), torch.log_softmax(ref_logits, 0)
    kl = (ref.exp() * (ref - logp)).sum() if reverse else (logp.exp() * (logp - ref)).sum()
    (grad,) = torch.autograd.grad(kl, theta)
    return grad


@pytest.mark.parametrize("seed", range(4))
def test_the_kl_loss_has_the_gradient_of_kl_policy_to_reference(seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(True)
    ref_logits = torch.randn(3, generator=g, dtype=torch.float64)
    forward = exact_kl_gradient(theta, ref_logits, reverse=False)  # grad KL(pi || ref)
    reverse = exact_kl_gradient(theta, ref_logits, reverse=True)  # grad KL(ref || pi)
    assert torch.allclose(expected_gradient(kl_penalty, theta, ref_logits), forward, atol=1e-12)
    # k3, the loss before: on-policy its gradient is the reverse KL's, a different direction.
    assert torch.allclose(expected_gradient(kl_to_reference, theta, ref_logits), reverse, atol=1e-12)
    assert not torch.allclose(forward, reverse, atol=1e-3)


def test_the_logged_k3_is_an_unbiased_estimate_of_kl_policy_to_reference():
    logp = torch.log_softmax(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 0)
    ref = torch.log_softmax(torch.tensor([1.0, 0.5, -0.5], dtype=torch.float64), 0)
    mean_k3 = (logp.exp() * kl_to_reference(logp, ref)).sum()
    assert float(mean_k3) == pytest.approx(float((logp.exp() * (logp - ref)).sum()), rel=1e-12)


# ----- the update on a tiny peft model ------------------------------------------------------
class Tok:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, PAD

    def __len__(self):
        return 50


def tiny_peft(names: list[str], seed: int = 0):
    """A tiny random llama with LoRA adapters `names`, each moved off the base model (B != 0)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # peft draws lora_A from the global stream
        model = attach_adapters(tiny_model(Tok()), names, LoraSettings(rank=2, alpha=4))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            for pname, p in adapter_parameters(model, name).items():
                if "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def sampled_turns(model, adapter: str, prompts: int = 4, per_prompt: int = 64, seed: int = 0) -> list[Sample]:
    """One-token completions drawn from `adapter`'s own policy, every advantage 0 (all tied)."""
    g = torch.Generator().manual_seed(seed)
    model.set_adapter(adapter)
    samples = []
    for _ in range(prompts):
        prompt = torch.randint(3, 50, (5,), generator=g).tolist()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]  # (V,)
        tokens = torch.multinomial(torch.softmax(logits, -1), per_prompt, replacement=True, generator=g)
        samples += [Sample(adapter=adapter, prompt_ids=prompt, completion_ids=[int(t)], advantage=0.0) for t in tokens]
    return samples


def next_token_kl(model, adapter: str, samples: list[Sample], reference: str | None = None) -> float:
    """The exact KL(policy || reference) of the next token after each distinct prompt, summed."""
    prompts = {tuple(s.prompt_ids) for s in samples}
    total = 0.0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)])
            model.set_adapter(adapter)
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
            if reference is None:
                with model.disable_adapter():
                    ref = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
            else:
                model.set_adapter(reference)
                ref = torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)
            total += float((logp.exp() * (logp - ref)).sum())
    return total


def test_an_all_tied_batch_with_beta_pulls_the_policy_toward_the_base(single_thread):
    model = tiny_peft(["policy"])
    samples = sampled_turns(model, "policy")
    before_kl = next_token_kl(model, "policy", samples)
    before = {n: p.detach().clone() for n, p in adapter_parameters(model, "policy").items()}
    optimizer = torch.optim.SGD(list(adapter_parameters(model, "policy").values()), lr=0.5)
    metrics = policy_update(model, optimizer, samples, KL_ONLY, PAD)
    assert metrics["update/skipped"] == 0.0 and metrics["update/optimizer_steps"] == 1.0
    assert metrics["update/informative_samples"] == 0 and metrics["update/samples"] == len(samples)
    assert metrics["loss/kl"] > 0
    after = adapter_parameters(model, "policy")
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert next_token_kl(model, "policy", samples) < before_kl
    # Without the KL term there is nothing to learn from: skipped, as before.
    skipped = policy_update(model, optimizer, samples, replace(KL_ONLY, beta=0.0), PAD)
    assert skipped["update/skipped"] == 1.0 and skipped["update/optimizer_steps"] == 0.0


def test_the_update_adds_beta_times_k2_and_logs_k3(single_thread):
    model = tiny_peft(["policy"])
    samples = sampled_turns(model, "policy", prompts=2, per_prompt=4)
    recorder = GradRecorder(model)
    metrics = policy_update(model, recorder, samples, replace(KL_ONLY, beta=0.3), PAD)
    # By hand: the same loss over the same tokens, token_mean.
    mask = completion_mask(samples)  # (B, K)
    model.zero_grad(set_to_none=True)
    model.set_adapter("policy")
    logps = window_logprobs(model, samples, PAD)  # (B, K)
    with torch.no_grad(), model.disable_adapter():
        ref = window_logprobs(model, samples, PAD)
    (0.3 * (kl_penalty(logps, ref) * mask).sum() / mask.sum()).backward()
    expected = {n: p.grad for n, p in adapter_parameters(model, "policy").items() if p.grad is not None}
    assert expected and recorder.grads.keys() >= expected.keys()
    for name, grad in expected.items():
        assert torch.allclose(recorder.grads[name], grad, rtol=1e-4, atol=1e-6 * float(grad.abs().max())), name
    k3 = (kl_to_reference(logps.detach(), ref) * mask).sum() / mask.sum()
    assert metrics["loss/kl"] == pytest.approx(float(k3), rel=1e-5)


def test_a_reference_adapter_replaces_the_base_model(single_thread):
    model = tiny_peft(["policy", "magnet"], seed=1)
    samples = sampled_turns(model, "policy", prompts=2, per_prompt=8)
    # A magnet that is an exact copy of the policy: no KL, no gradient.
    with torch.no_grad():
        magnet = adapter_parameters(model, "magnet")
        for name, p in adapter_parameters(model, "policy").items():
            magnet[name.replace(".policy.", ".magnet.")].copy_(p)
    to_base, to_copy = GradRecorder(model), GradRecorder(model)
    policy_update(model, to_base, samples, KL_ONLY, PAD)
    metrics = policy_update(model, to_copy, samples, KL_ONLY, PAD, reference_adapters={"policy": "magnet"})
    assert metrics["loss/kl"] == 0.0
    assert any(g.abs().max() > 0 for g in to_base.grads.values())  # the base model differs: a pull
    assert all(torch.equal(g, torch.zeros_like(g)) for g in to_copy.grads.values())
    # A magnet elsewhere: the policy moves toward it, and the magnet itself never moves.
    with torch.no_grad():
        for name, p in adapter_parameters(model, "magnet").items():
            if "lora_B" in name:
                p.mul_(-1.0)  # the magnet's change to the base is the policy's, reversed
    held = {n: p.detach().clone() for n, p in adapter_parameters(model, "magnet").items()}
    before_kl = next_token_kl(model, "policy", samples, reference="magnet")
    optimizer = torch.optim.SGD(list(adapter_parameters(model, "policy").values()), lr=0.5)
    policy_update(model, optimizer, samples, KL_ONLY, PAD, reference_adapters={"policy": "magnet"})
    assert next_token_kl(model, "policy", samples, reference="magnet") < before_kl
    assert all(torch.equal(held[n], p) for n, p in adapter_parameters(model, "magnet").items())
