"""The PPO-clipped policy update both trainers share: each agent turn is a sample with
its own advantage (GRPO's group-relative one, or the critic's GAE one); every live
adapter is updated from its samples. Pure loss functions of tensors (testable with
hand-made values) and `policy_update`, the orchestration that calls them.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from multiagent_rl.models import autocast
from multiagent_rl.token_scoring import completion_logprobs, score_tokens

from .distributed import SINGLE, Ranks

# ----- losses -------------------------------------------------------------------------


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip objective per token (to minimise) and whether each token was clipped.

    logps, old_logps: (B, T); advantages: (B,). Returns ((B, T) loss, (B, T) clipped mask).
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logps - old_logps)  # (B, T)
    adv = advantages.unsqueeze(1)  # (B, 1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + high) * adv
    loss = -torch.minimum(unclipped, clipped)  # (B, T)
    was_clipped = (clipped < unclipped).float()
    return loss, was_clipped


def importance_weights(old_logps: torch.Tensor, sampler_logps: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights min(pi_old / pi_sampler, cap) per token, detached: the
    PPO ratio is taken to the trainer's old policy, and this corrects for the tokens having
    been sampled by another one (another engine's kernels, an older adapter), as verl's and
    TRL's truncated importance sampling do. (B, T), (B, T) -> (B, T).

    >>> importance_weights(torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, -3.0]]), cap=2.0).tolist()
    [[1.0, 2.0]]
    """
    return torch.exp(old_logps.detach() - sampler_logps).clamp(max=cap)


def kl_to_reference(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) on tokens the policy sampled: unbiased
    and always >= 0, so it is what `loss/kl` reports. Not the loss: its gradient on such tokens
    is that of KL(reference || policy) (`kl_penalty`). (B, T) -> (B, T)."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k2 = (log pi - log ref)^2 / 2, the KL term of the loss: its gradient,
    (log pi - log ref) * grad log pi, is on tokens the policy sampled (in expectation) the
    gradient of KL(policy || reference). (B, T) -> (B, T).

    >>> kl_penalty(torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, -3.0]])).tolist()
    [[0.0, 2.0]]
    """
    return 0.5 * (logps - ref_logps) ** 2


@dataclass
class Normaliser:
    """Global sizes of the batch a loss is aggregated over, so micro-batches add up exactly."""

    sequences: int
    tokens: int
    max_len: int


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, norm: Normaliser) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over completion tokens (mask (B, T)) to a scalar.

    sequence_mean: mean over each sequence's tokens, then over sequences (GRPO);
    token_mean: sum over all tokens / all tokens in the batch (DAPO);
    fixed_length: sum / (sequences * max_len), length-unbiased (Dr. GRPO).
    Micro-batch results sum to the full-batch value because `norm` is global.
    """
    masked = per_token * mask
    if mode == "sequence_mean":
        per_seq = masked.sum(1) / mask.sum(1).clamp_min(1)  # (B,)
        return per_seq.sum() / max(norm.sequences, 1)
    if mode == "token_mean":
        return masked.sum() / max(norm.tokens, 1)
    if mode == "fixed_length":
        return masked.sum() / max(norm.sequences * norm.max_len, 1)
    raise ValueError(f"unknown loss aggregation {mode!r}; use sequence_mean, token_mean or fixed_length")


# ----- the update ---------------------------------------------------------------------


@dataclass
class Sample:
    """One agent turn ready for the update."""

    adapter: str
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    temperature: float = 1.0  # the one it was sampled at: log-probs are recomputed under it
    logprobs: Sequence[float] = ()  # the sampler's own, per completion token (compared, not trained on)
    key: Hashable = None  # its place in the update's batch (set by policy_update; caches use it)
    allowed_token_ids: tuple[int, ...] | None = None  # a symbol channel's: scored renormalised over these


def left_pad(rows: Sequence[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-padded token rows: (ids, attention, positions as generation saw them), each (B, L),
    built on the host and moved to `device` in one copy per tensor. Every row ends at the
    right edge."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    positions = (attention.cumsum(1) - 1).clamp_min(0)  # 0 at each row's first real token
    return ids, attention, positions


def completion_mask(samples: Sequence[Sample], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, K) 1 on each sample's completion tokens, right-aligned in a window of K, the
    longest completion: the layout every per-token loss term of a micro-batch uses."""
    window = max(len(s.completion_ids) for s in samples)
    rows = [[0.0] * (window - len(s.completion_ids)) + [1.0] * len(s.completion_ids) for s in samples]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def window_logprobs(model, samples: Sequence[Sample], pad_id: int) -> torch.Tensor:
    """log p of each sample's completion tokens under the active adapter, at the temperature
    it was sampled at, right-aligned in a (B, K) window (0 outside `completion_mask`).

    Shared prompts run once and no logits over the whole vocabulary are kept
    (`token_scoring`): the G samples of a group, a role's system prompt and identical
    samples cost their distinct tokens only."""
    logps = completion_logprobs(model, [s.prompt_ids for s in samples], [s.completion_ids for s in samples],
                                [s.temperature if s.temperature > 0 else 1.0 for s in samples],  # greedy: at 1
                                pad_id, [s.allowed_token_ids for s in samples])
    window = max(len(s.completion_ids) for s in samples)
    return torch.stack([F.pad(lp, (window - lp.shape[0], 0)) for lp in logps])  # (B, K)


def symbol_entropy(model, samples: Sequence[Sample], pad_id: int) -> torch.Tensor:
    """The entropy (nats) of the policy over a symbol channel's symbols at each completion
    token of the samples that have one, renormalised over them as they were sampled, in the
    (B, K) window of `window_logprobs`; 0 for the others. Differentiable: the bonus on it is
    EGG's sender entropy term."""
    device = _device(model)
    window = max(len(s.completion_ids) for s in samples)
    out = torch.zeros(len(samples), window, device=device)
    spoken = [i for i, s in enumerate(samples) if s.allowed_token_ids is not None]
    sequences = [list(samples[i].prompt_ids) + list(samples[i].completion_ids) for i in spoken]
    queries = [[(len(samples[i].prompt_ids) + j, t) for j in range(len(samples[i].completion_ids))
                for t in samples[i].allowed_token_ids] for i in spoken]
    temperatures = [samples[i].temperature if samples[i].temperature > 0 else 1.0 for i in spoken]
    logps = score_tokens(model, sequences, queries, temperatures, pad_id,
                         allowed=[samples[i].allowed_token_ids for i in spoken])
    for i, lp in zip(spoken, logps, strict=True):
        per_symbol = lp.view(len(samples[i].completion_ids), len(samples[i].allowed_token_ids))  # (c, A)
        out[i, window - per_symbol.shape[0]:] = -(per_symbol.exp() * per_symbol).sum(-1).to(out.dtype)  # (c,)
    return out


@dataclass
class UpdateSettings:
    epochs: int = 1
    minibatches: int = 1
    micro_batch_size: int = 16
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    beta: float = 0.0
    symbol_entropy: float = 0.0  # bonus on the entropy over a symbol channel's symbols (samples with allowed ids)
    loss_aggregation: str = "token_mean"
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "bf16": autocast matmuls to bfloat16 (log-probs stay float32)
    importance_cap: float | None = None  # truncated importance weight to the sampler's policy (None: off)


def policy_update(
    model, optimizer, samples: Sequence[Sample], settings: UpdateSettings, pad_id: int,
    backward=None, scheduler=None, ranks: Ranks = SINGLE, reference_adapters: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Update every adapter from its samples. An adapter shared by several roles gets all
    their samples; the others' LoRA weights get no gradient (only the active one trains).

    The clipped policy-gradient term learns from samples with a nonzero advantage
    (`update/informative_samples`; `policy/clip_fraction` is over their tokens). With
    `beta > 0` the KL term (`kl_penalty`; `loss/kl` logs `kl_to_reference`) acts on every
    sample with a completion, tied ones included, so a batch whose rewards all tie still
    pulls the policy back toward its reference; the loss normalisers then count every such
    sample. The update is skipped (`update/skipped` 1) only when there is nothing to learn
    from: no nonzero advantage and `beta` 0 (or no completion at all).

    `reference_adapters`: adapter -> the adapter whose log-probs are its KL reference (a frozen
    copy of it, say); an adapter not in it is held to the base model.
    `model` is a PeftModel; `backward(loss)` defaults to loss.backward() (accelerate's otherwise).
    With several processes (`ranks`), each passes its own samples: loss normalisers count
    every rank's samples and gradients are summed over ranks before each optimizer step,
    so N processes take the step one process would take on all the samples.
    """
    from multiagent_rl.adapters import enable_training

    backward = backward or (lambda loss: loss.backward())
    device = _device(model)
    regularised = settings.beta > 0
    explored = settings.symbol_entropy > 0  # the entropy bonus acts on every symbol turn, tied or not

    def kept(s: Sample) -> bool:
        return s.advantage != 0.0 or regularised or (explored and s.allowed_token_ids is not None)

    # Numbered here: the old-log-prob and reference caches are keyed by place, not identity.
    trained = [replace(s, key=i) for i, s in enumerate(x for x in samples if x.completion_ids and kept(x))]
    metrics: dict[str, float] = defaultdict(float)
    total_samples, total_informative, total_trained = ranks.sum(
        [len(samples), sum(s.advantage != 0.0 for s in trained), len(trained)])
    metrics["update/samples"] = total_samples
    metrics["update/informative_samples"] = total_informative
    if not total_trained:
        # Nothing to learn from (all advantages zero, no KL term): say so instead of stepping on noise.
        metrics.update({"update/skipped": 1.0, "loss/policy": 0.0, "loss/kl": 0.0, "policy/clip_fraction": 0.0,
                        "grad_norm": 0.0, "update/optimizer_steps": 0.0, "perf/grad_sync_seconds": 0.0})
        return dict(metrics)
    by_adapter: dict[str, list[Sample]] = defaultdict(list)
    for s in trained:
        by_adapter[s.adapter].append(s)
    # Old log-probs: with one pass over the batch the policy is unchanged when each
    # sample is first seen, so the ratio is exactly 1 (old = current, detached).
    one_pass = settings.epochs == 1 and settings.minibatches == 1
    precision = autocast(settings.mixed_precision, device)
    old_cache: dict[Hashable, torch.Tensor] = {}
    ref_cache: dict[Hashable, torch.Tensor] = {}
    model.train()

    def remember(cache: dict[Hashable, torch.Tensor], group: list[Sample]) -> None:
        for chunk in _chunks(_by_prompt(group), settings.micro_batch_size):
            _remember(cache, chunk, window_logprobs(model, chunk, pad_id))

    if not one_pass or regularised:
        with torch.no_grad(), precision:
            for adapter, group in by_adapter.items():
                if not one_pass:
                    model.set_adapter(adapter)
                    remember(old_cache, group)
                if regularised:
                    reference = (reference_adapters or {}).get(adapter)
                    if reference is None:
                        with model.disable_adapter():  # the base model
                            remember(ref_cache, group)
                    else:
                        model.set_adapter(reference)
                        remember(ref_cache, group)
    counts = defaultdict(float)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    minibatches = _split(trained, settings.minibatches)
    # Every rank takes the same number of optimizer steps, one with fewer samples on empty minibatches.
    (steps_per_epoch,) = ranks.max([len(minibatches)])
    minibatches += [[]] * (int(steps_per_epoch) - len(minibatches))
    for epoch in range(settings.epochs):
        for minibatch in minibatches:
            optimizer.zero_grad(set_to_none=True)
            mb_by_adapter: dict[str, list[Sample]] = defaultdict(list)
            for s in minibatch:
                mb_by_adapter[s.adapter].append(s)
            sequences, tokens = ranks.sum([len(minibatch), sum(len(s.completion_ids) for s in minibatch)])
            (max_len,) = ranks.max([max((len(s.completion_ids) for s in minibatch), default=0)])
            norm = Normaliser(sequences=int(sequences), tokens=int(tokens), max_len=int(max_len))
            for adapter, group in mb_by_adapter.items():
                model.set_adapter(adapter)
                enable_training(model, [adapter])
                for chunk in _chunks(_by_prompt(group), settings.micro_batch_size):
                    mask = completion_mask(chunk, device)  # (B, K)
                    with precision:
                        logps = window_logprobs(model, chunk, pad_id)  # (B, K)
                    if one_pass:
                        old = logps.detach()
                    else:
                        old = _recall(old_cache, chunk, mask.shape[1], device)
                    if epoch == 0:  # how far the sampler's log-probs are from the trainer's, before any step
                        gap_sum, gap_max, gap_tokens = _sampler_gap(chunk, old)
                        counts["gap_sum"] += gap_sum
                        counts["gap_tokens"] += gap_tokens
                        counts["gap_max"] = max(counts["gap_max"], gap_max)
                    adv = torch.tensor([s.advantage for s in chunk], dtype=torch.float32, device=device)  # (B,)
                    per_token, clipped = clipped_policy_loss(logps, old, adv, settings.clip_eps, settings.clip_eps_high)
                    if settings.importance_cap is not None:
                        weights = importance_weights(old, _sampled(chunk, old), settings.importance_cap)  # (B, K)
                        per_token = per_token * weights
                        counts["truncated"] += float(((weights >= settings.importance_cap) * mask).sum())
                        counts["weight_sum"] += float((weights * mask).sum())
                    if regularised:
                        ref = _recall(ref_cache, chunk, mask.shape[1], device)  # (B, K)
                        per_token = per_token + settings.beta * kl_penalty(logps, ref)
                        counts["kl_sum"] += float((kl_to_reference(logps.detach(), ref) * mask).sum())
                    if explored and any(s.allowed_token_ids is not None for s in chunk):
                        with precision:
                            entropy = symbol_entropy(model, chunk, pad_id)  # (B, K)
                        per_token = per_token - settings.symbol_entropy * entropy
                        counts["entropy_sum"] += float((entropy.detach() * mask).sum())
                        counts["entropy_tokens"] += sum(len(s.completion_ids) for s in chunk if s.allowed_token_ids)
                    loss = aggregate(per_token, mask, settings.loss_aggregation, norm)
                    backward(loss)
                    counts["loss"] += float(loss.detach())
                    counts["clipped"] += float((clipped * mask).sum())
                    counts["tokens"] += float(mask.sum())
                    counts["pg_tokens"] += float((mask * (adv != 0).unsqueeze(1)).sum())  # those the clip may touch
            sync_start = time.perf_counter()
            ranks.sum_gradients(trainable)
            counts["sync_seconds"] += time.perf_counter() - sync_start
            params = [p for p in trainable if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm) if params else torch.tensor(0.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            counts["grad_norm"] += float(grad_norm)
            counts["optimizer_steps"] += 1
    enable_training(model, list(model.peft_config))
    # Each rank's loss terms were already divided by the global normalisers: their sum is the loss.
    summed = ("loss", "clipped", "tokens", "pg_tokens", "kl_sum", "gap_sum", "gap_tokens", "truncated", "weight_sum",
              "entropy_sum", "entropy_tokens")
    for name, value in zip(summed, ranks.sum([counts[name] for name in summed]), strict=True):
        counts[name] = value
    (counts["gap_max"],) = ranks.max([counts["gap_max"]])
    steps = max(counts["optimizer_steps"], 1)
    metrics["loss/policy"] = counts["loss"] / steps
    metrics["policy/clip_fraction"] = counts["clipped"] / max(counts["pg_tokens"], 1)
    metrics["loss/kl"] = counts["kl_sum"] / max(counts["tokens"], 1)
    metrics["grad_norm"] = counts["grad_norm"] / steps
    metrics["update/optimizer_steps"] = counts["optimizer_steps"]
    metrics["perf/grad_sync_seconds"] = counts["sync_seconds"]  # waiting for other ranks included
    metrics["update/skipped"] = 0.0
    if counts["gap_tokens"]:  # near 0 when sampler and trainer agree (HF backend, one policy version)
        metrics["policy/sampler_logprob_gap_mean"] = counts["gap_sum"] / counts["gap_tokens"]
        metrics["policy/sampler_logprob_gap_max"] = counts["gap_max"]
    if counts["entropy_tokens"]:  # the symbol channel's entropy per symbol, as the bonus saw it
        metrics["policy/symbol_entropy"] = counts["entropy_sum"] / counts["entropy_tokens"]
    if settings.importance_cap is not None:
        metrics["policy/importance_truncated_fraction"] = counts["truncated"] / max(counts["tokens"], 1)
        metrics["policy/importance_weight_mean"] = counts["weight_sum"] / max(counts["tokens"], 1)
    if not math.isfinite(metrics["loss/policy"]):
        raise FloatingPointError(f"policy loss is {metrics['loss/policy']}; lower lr or check rewards")
    return dict(metrics)


def _sampler_gap(chunk: Sequence[Sample], old: torch.Tensor) -> tuple[float, float, int]:
    """|sampler log-prob - trainer log-prob| over the completion tokens of `chunk` whose
    sampler log-probs are known: (sum, max, tokens). `old`: (B, K) right-aligned windows."""
    total, largest, tokens = 0.0, 0.0, 0
    for s, row in zip(chunk, old, strict=True):
        if not s.logprobs or len(s.logprobs) != len(s.completion_ids):
            continue
        sampled = torch.tensor(list(s.logprobs), dtype=torch.float32, device="cpu")  # (c,)
        diff = (row[row.shape[0] - len(sampled) :].detach().float().cpu() - sampled).abs()
        total, largest, tokens = total + float(diff.sum()), max(largest, float(diff.max())), tokens + len(sampled)
    return total, largest, tokens


def _sampled(chunk: Sequence[Sample], old: torch.Tensor) -> torch.Tensor:
    """The sampler's log-probs of `chunk` laid out like `old` (B, K); where a sample has none
    (or a count that does not match its tokens) its row is `old`'s, so its weight is 1."""
    out = old.detach().clone()
    for i, s in enumerate(chunk):
        if s.logprobs and len(s.logprobs) == len(s.completion_ids):
            out[i, out.shape[1] - len(s.logprobs):] = torch.tensor(list(s.logprobs), dtype=out.dtype, device=out.device)
    return out


def _by_prompt(samples: Sequence[Sample]) -> list[Sample]:
    """Samples with alike prompts side by side, so a micro-batch holds what can share a prefix."""
    return sorted(samples, key=lambda s: (s.prompt_ids, s.completion_ids))


def _remember(cache: dict[Hashable, torch.Tensor], chunk: Sequence[Sample], window: torch.Tensor) -> None:
    """Keep each sample's own completion log-probs (the last c_i of its window row)."""
    for s, row in zip(chunk, window, strict=True):
        cache[s.key] = row[row.shape[0] - len(s.completion_ids) :].detach().clone()


def _recall(cache: dict[Hashable, torch.Tensor], chunk: Sequence[Sample], window: int, device: torch.device) -> torch.Tensor:
    """Cached per-sample log-probs laid out right-aligned in a (B, K) window."""
    out = torch.zeros((len(chunk), window), device=device)
    for i, s in enumerate(chunk):
        row = cache[s.key]
        out[i, window - row.shape[0] :] = row
    return out


def _device(model) -> torch.device:
    """The one device the model's weights (and so every batch) live on."""
    return next(model.parameters()).device


def _chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _split(items: Sequence, parts: int) -> list[Sequence]:
    if not items:
        return []
    parts = max(1, min(parts, len(items)))
    size = math.ceil(len(items) / parts)
    return [items[i : i + size] for i in range(0, len(items), size)]
