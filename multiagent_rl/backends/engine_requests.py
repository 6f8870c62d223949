"""What an engine request is made of, shared by the in-process vLLM backend and the vLLM
server client, so both send vLLM the same prompt ids, sampling settings and seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import GenerationRequest
from .lora_files import VLLMBackendError

_SEED_MASK = (1 << 63) - 1


def request_seed(seed: int, index: int) -> int:
    """A per-request sampling seed from a call seed and the request's index (splitmix64
    mix, so neighbouring calls don't share shifted streams)."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _SEED_MASK


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids with the chat template applied here (`add_generation_prompt`),
    so the ids a result reports are exactly the ones the engine saw."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, Mapping):  # older transformers return a BatchEncoding here
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def sampling_settings(request: GenerationRequest, seed: int, allowed: Sequence[int] | None = None) -> dict[str, Any]:
    """vLLM's sampling settings for one request (`SamplingParams` keywords; the same names
    in an OpenAI completions request): temperature 0 = greedy, the sampled token's log-prob
    only, stop strings kept out of the text; `allowed`: a symbol channel's tokens, the only
    ones sampled (`allowed_token_ids`, applied before the log-probs are read)."""
    if request.temperature < 0:
        raise VLLMBackendError(f"temperature must be >= 0, got {request.temperature}")
    if request.max_new_tokens < 1:
        raise VLLMBackendError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
    greedy = request.temperature == 0
    return {
        "temperature": 0.0 if greedy else float(request.temperature),
        "top_p": 1.0 if greedy else float(request.top_p),
        "max_tokens": int(request.max_new_tokens),
        "stop": list(request.stop) or None,
        "logprobs": 0,  # the sampled token's log-prob only
        "seed": seed,
        "skip_special_tokens": True,
        "include_stop_str_in_output": False,
        "allowed_token_ids": list(allowed) if allowed is not None else None,
    }


def check_prompt_lengths(requests: Sequence[GenerationRequest], prompt_ids: Sequence[list[int]], max_model_len: int) -> None:
    """Refuse, before any work, a prompt that leaves no room to generate."""
    for i, (request, ids) in enumerate(zip(requests, prompt_ids, strict=True)):
        if len(ids) >= max_model_len:
            raise VLLMBackendError(
                f"request {i} (adapter {request.adapter!r}, tag {request.tag!r}) has a "
                f"{len(ids)}-token prompt; max_model_len={max_model_len} leaves no room "
                "to generate: create the backend with a larger max_model_len or shorten the prompt"
            )
