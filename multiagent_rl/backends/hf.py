"""transformers + peft backend: every request of a round in ONE mixed-adapter `generate`.

Rows carry their own adapter (`adapter_names=`, peft's mixed-batch LoRA) and their
own temperature (a per-row logits processor), so one call serves every agent of
every running episode. Per-row `max_new_tokens` and stop strings are applied by
cutting each row afterwards; the call runs to the longest row's budget. Each sampled
token's log-prob is read as it is generated (`SampledLogprobs`), so memory does not
grow with rows x vocabulary x new tokens.

>>> backend = HFBackend(peft_model, tokenizer)                                  # doctest: +SKIP
>>> backend.generate([GenerationRequest(chat_a, "solver_a"), GenerationRequest(chat_b, None)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from ..models import autocast
from ..symbols import allowed_token_ids
from ..token_scoring import prefill
from .base import GenerationRequest, GenerationResult

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch

# `generate` appends its own sampling warpers AFTER the processors it is given, some from
# the model's generation config; all off, so our chain (temperature, top-p, log-probs) is
# exactly what the sampler uses and the log-prob recorder really is last.
NO_BUILTIN_WARPERS = dict(
    temperature=1.0, top_k=0, top_p=1.0, min_p=None, top_h=None, typical_p=1.0,
    epsilon_cutoff=0.0, eta_cutoff=0.0, renormalize_logits=False,
)


class AllowedTokens(LogitsProcessor):
    """First processor: rows with a symbol channel keep only its tokens' logits (the rest
    -inf), so sampling, greedy picks and the reported log-probs all see the renormalised
    distribution."""

    def __init__(self, allowed: Sequence[tuple[int, ...] | None]):
        self.allowed = allowed
        self.keep: torch.Tensor | None = None  # (B, V), built at the first step and reused at every other

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            self.keep = torch.ones_like(scores, dtype=torch.bool)
            for row, ids in enumerate(self.allowed):
                if ids is not None:
                    self.keep[row] = False
                    self.keep[row, list(ids)] = True
        return scores.masked_fill(~self.keep, float("-inf"))


class PerRowTemperature(LogitsProcessor):
    """Divide each row's logits by its own temperature; temperature 0 keeps only the argmax."""

    def __init__(self, temperatures: torch.Tensor):
        self.temperatures = temperatures  # (B,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        greedy = self.temperatures <= 0
        scaled = scores / self.temperatures.clamp_min(1e-6).unsqueeze(1).to(scores.dtype)  # (B, V)
        if greedy.any():
            top = scores.argmax(dim=-1)
            masked = torch.full_like(scores, float("-inf"))
            masked.scatter_(1, top.unsqueeze(1), 0.0)
            scaled = torch.where(greedy.unsqueeze(1), masked, scaled)
        return scaled


class SampledLogprobs(LogitsProcessor):
    """Last processor: each row's log-prob of the token it sampled, under the scores the
    sampler saw (log-softmax of the processed scores, as `output_scores` gave them).

    The token sampled from step t's scores is only known at step t + 1 (the last column
    of `input_ids`; a pad for rows already finished), so one step's log-softmax is held
    and the final step's is read in `finish`. Memory: one (rows, vocab) tensor, plus
    (rows,) per step.
    """

    def __init__(self):
        self.picked: list[torch.Tensor] = []  # (B,) per step
        self.pending: torch.Tensor | None = None  # (B, V): the previous step's log-softmax

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.picked.append(self._take(input_ids[:, -1]))
        # Not under bf16 autocast: the same float32 op the log-probs were always read with.
        with torch.autocast(scores.device.type, enabled=False):
            self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> torch.Tensor:
        picked = self.pending.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (B,)
        self.pending = None  # freed before the next step allocates its own
        return picked

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of the new tokens `sequences` (B, T) that `generate` returned."""
        steps = sequences.shape[1]
        if len(self.picked) == steps - 1:  # the last token: no step came after it
            self.picked.append(self._take(sequences[:, -1]))
        self.pending = None
        if not steps:
            return torch.zeros(sequences.shape, device=sequences.device)
        # More steps than tokens when generate undid a deferred stop check's extra step.
        return torch.stack(self.picked[:steps], dim=1)


class HFBackend:
    """Generation with a (peft) transformers model. Weights are shared with training,
    so updated adapters are visible at once (`sync` has nothing to do)."""

    def __init__(self, model, tokenizer, max_batch_size: int | None = None, mixed_precision: str = "no",
                 share_prefixes: bool = True):
        if mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.mixed_precision = mixed_precision
        # Prompts that begin alike (a role's system prompt, one task's G episodes) are encoded
        # once (`token_scoring.prefill`); off: one plain left-padded batch, every token encoded.
        self.share_prefixes = share_prefixes
        self.end_ids = end_token_ids(model, tokenizer)

    @property
    def adapters(self) -> list[str]:
        return list(getattr(self.model, "peft_config", {}) or {})

    def sync(self, model, adapters, folder) -> None:
        return None  # generation runs on the trained model itself: in sync by construction

    def encode(self, request: GenerationRequest) -> list[int]:
        ids = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, requests: Sequence[GenerationRequest], seed: int | None = None) -> list[GenerationResult]:
        if not requests:
            return []
        self._check_adapters(requests)
        if seed is not None:
            torch.manual_seed(seed)
        # Rows with different top_p can't share a sampler; everything else can.
        results: list[GenerationResult | None] = [None] * len(requests)
        by_top_p: dict[float, list[int]] = {}
        for i, r in enumerate(requests):
            by_top_p.setdefault(float(r.top_p), []).append(i)
        for top_p, indices in by_top_p.items():
            size = self.max_batch_size or len(indices)
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                for i, res in zip(chunk, self._generate_batch([requests[i] for i in chunk], top_p), strict=True):
                    results[i] = res
        return results  # type: ignore[return-value]

    def _check_adapters(self, requests: Sequence[GenerationRequest]) -> None:
        known = set(self.adapters)
        for r in requests:
            if r.adapter is not None and r.adapter not in known:
                raise ValueError(f"unknown adapter {r.adapter!r}; the model has: {', '.join(sorted(known)) or '(none)'}")

    def _generate_batch(self, requests: list[GenerationRequest], top_p: float) -> list[GenerationResult]:
        prompts = [self.encode(r) for r in requests]
        allowed = allowed_token_ids([r.channel for r in requests], self.tokenizer)
        sequences, token_logprobs = self._sample(prompts, requests, top_p, allowed)  # (B, T) each
        return [
            self._finish(req, prompt, sequences[i].tolist(), token_logprobs[i].tolist(), allowed[i])
            for i, (req, prompt) in enumerate(zip(requests, prompts, strict=True))
        ]

    @torch.no_grad()
    def _sample(self, prompts: list[list[int]], requests: list[GenerationRequest], top_p: float,
                allowed: Sequence[tuple[int, ...] | None]):
        """One `generate` call: the new token ids (B, T) and their log-probs (B, T), T the
        longest row's budget or fewer if every row ended; rows that ended are padded."""
        tok = self.tokenizer
        pad = tok.pad_token_id
        device = next(self.model.parameters()).device  # every input goes where the weights are
        temperatures = torch.tensor([float(r.temperature) for r in requests], device=device)  # (B,)
        max_new = max(int(r.max_new_tokens) for r in requests)
        kwargs = {}
        if self.adapters:
            kwargs["adapter_names"] = [r.adapter or BASE_ADAPTER for r in requests]
        elif any(r.adapter for r in requests):
            raise ValueError("requests name adapters but the model has none")
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast(self.mixed_precision, device):
                if self.share_prefixes and min(len(p) for p in prompts) > 1:
                    adapters = kwargs.get("adapter_names") or [None] * len(prompts)
                    input_ids, attention, kwargs["past_key_values"] = prefill(self.model, prompts, adapters, pad)
                else:
                    # Left padding: every row's next token is generated at the same position.
                    width = max(len(p) for p in prompts)
                    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)  # (B, P)
                    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                                             device=device)  # (B, P)
                return self._call_generate(input_ids, attention, max_new, top_p, temperatures, allowed, kwargs)
        finally:
            self.model.train(was_training)

    def _call_generate(self, input_ids, attention, max_new, top_p, temperatures, allowed, kwargs):
        processors = [AllowedTokens(allowed)] if any(a is not None for a in allowed) else []
        processors.append(PerRowTemperature(temperatures))
        if top_p < 1.0:  # as generate's own top-p warper, which NO_BUILTIN_WARPERS turns off
            processors.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        logprobs = SampledLogprobs()
        processors.append(logprobs)
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            do_sample=True,
            **NO_BUILTIN_WARPERS,
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.end_ids,
            **kwargs,
        )[:, input_ids.shape[1] :]  # (B, T)
        return sequences, logprobs.finish(sequences)

    def _finish(self, req: GenerationRequest, prompt: list[int], ids: list[int], lps: list[float],
                allowed: tuple[int, ...] | None = None) -> GenerationResult:
        # Cut at the first end-of-turn token (kept: the policy must learn to stop). Pad may
        # equal end-of-turn, so we never strip by pad id; the first end token ends the row.
        finish = "length"
        end = len(ids)
        for j, t in enumerate(ids):
            if t in self.end_ids:
                end, finish = j + 1, "stop"
                break
        if end > req.max_new_tokens:
            end, finish = req.max_new_tokens, "length"
        ids, lps = ids[:end], lps[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if req.stop:
            cut = _stop_cut(self.tokenizer, ids, req.stop)
            if cut is not None:
                ids, lps, finish = ids[:cut], lps[:cut], "stop"
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                for s in req.stop:
                    text = text.split(s, 1)[0]
        return GenerationResult(text=text, prompt_ids=prompt, completion_ids=ids, logprobs=lps, finish_reason=finish,
                                tag=req.tag, allowed_token_ids=allowed)


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply: the model's and tokenizer's end-of-sequence ids and the
    chat template's end of turn."""
    ids = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if end is not None:
        ids.add(end)
    return sorted(ids)


def _stop_cut(tokenizer, ids: list[int], stops: list[str]) -> int | None:
    """Smallest token count whose decoded text contains a stop string (tokens up to it are kept)."""
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
        if any(s in text for s in stops):
            return n
    return None
