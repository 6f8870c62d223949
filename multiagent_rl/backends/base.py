"""The generation backend contract: chat requests tagged with an adapter in, token ids,
text and log-probs out. One `generate` call takes a whole round of requests from
every active agent of every running episode, mixing adapters in one batch.

>>> backend.generate([GenerationRequest(messages=chat, adapter="solver_a")])  # doctest: +SKIP
[GenerationResult(text='19', completion_ids=[...], logprobs=[...], finish_reason='stop', ...)]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..symbols import SymbolChannel


@dataclass
class GenerationRequest:
    """One completion to generate.

    `adapter=None` uses the base model. `temperature=0` means greedy decoding.
    `stop` strings end the completion (the stop string itself is kept out of `text`).
    `channel`: a `SymbolChannel`: sample only its symbols' tokens, exactly its length of them.
    """

    messages: list[dict[str, str]]
    adapter: str | None = None
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    channel: SymbolChannel | None = None
    tag: Any = None

    def __post_init__(self) -> None:
        if self.channel is not None:  # a channel's message is exactly its length
            self.max_new_tokens = self.channel.length


@dataclass
class GenerationResult:
    """A completion: its text, the prompt and completion token ids (completion
    ends at the end-of-turn token if one was produced), per-token log-probs of the
    sampled tokens under the sampling distribution, and why it stopped. A channel's
    request reports the tokens it was restricted to (`allowed_token_ids`): its log-probs are
    those of the distribution renormalised over them."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (end-of-turn or stop string) | "length"
    tag: Any = None
    allowed_token_ids: tuple[int, ...] | None = None


@runtime_checkable
class GenerationBackend(Protocol):
    """What the rollout needs from an inference engine."""

    def generate(self, requests: Sequence[GenerationRequest], seed: int | None = None) -> list[GenerationResult]:
        """Results in request order; one batched call for all requests."""
        ...

    def sync(self, model: Any, adapters: Sequence[str], folder: str | os.PathLike[str]) -> None:
        """After an update: make `model`'s current `adapters` the ones generation uses (HF:
        nothing to do, the weights are shared in place; vLLM: save them under `folder` and
        serve them under new versioned names, never reused)."""
        ...
