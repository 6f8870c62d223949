"""What the centralised critic reads and how it reads it: the decision points of a batch
(the global state before each turn step and who acts in it, plus, for a privileged critic,
the task's reference answer) and the value model over their text (`trainers/critic.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from multiagent_rl.adapters import adapter_parameters
from multiagent_rl.models import autocast
from multiagent_rl.rollout import RolloutBatch, TurnSample

from .policy import left_pad

VALUE_ADAPTER = "value_critic"


class ValueModel:
    """V(state) -> one value per stream: a LoRA adapter of its own on a causal LM (the policy's
    PeftModel by default) and a linear head on the last token's final hidden state. Not an
    nn.Module: the shared PeftModel is the run's, not a submodule of the critic."""

    def __init__(self, peft_model, tokenizer, streams: int, max_tokens: int, mixed_precision: str = "no"):
        self.peft_model = peft_model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.mixed_precision = mixed_precision
        hidden = peft_model.get_base_model().config.hidden_size
        device = next(peft_model.parameters()).device
        self.head = torch.nn.Linear(hidden, streams, device=device)
        # Values start near 0 (no made-up baseline), but not exactly: a zero head would give
        # the value adapter no gradient in the first update.
        torch.nn.init.normal_(self.head.weight, std=1e-3)
        torch.nn.init.zeros_(self.head.bias)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(adapter_parameters(self.peft_model, VALUE_ADAPTER).values()) + list(self.head.parameters())

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each state, keeping its last `max_tokens` (the newest messages)."""
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [row[-self.max_tokens :] or [self.tokenizer.eos_token_id or 0] for row in ids]

    def __call__(self, rows: Sequence[list[int]]) -> torch.Tensor:
        """(B, streams) values of left-padded rows under the value adapter."""
        device = self.head.weight.device
        ids, attention, positions = left_pad(rows, self.tokenizer.pad_token_id or 0, device)  # (B, L) each
        self.peft_model.set_adapter(VALUE_ADAPTER)
        decoder = self.peft_model.get_base_model().get_decoder()  # no LM head: only the hidden state is needed
        with autocast(self.mixed_precision, device):
            hidden = decoder(input_ids=ids, attention_mask=attention, position_ids=positions).last_hidden_state  # (B, L, H)
        return self.head(hidden[:, -1, :].float())  # (B, S): left padding puts every row's last token at -1


def reference_answers(batch: RolloutBatch) -> dict[int, str]:
    """Each episode's reference answer (`Task.answer`), where its task has one: what a
    privileged critic reads and no policy ever sees."""
    return {e: ep.task.answer for e, ep in enumerate(batch.episodes) if ep.task is not None and ep.task.answer is not None}


def decision_points(
    turns: Sequence[TurnSample], states: Mapping[tuple[int, int], str], answers: Mapping[int, str] | None = None,
) -> tuple[list[int], list[tuple[int, int]], list[str]]:
    """The states turns were taken in, one per turn step of each episode (agents acting in
    one step act on the same state, as one joint move), in order: what the critic values.

    `turns` sorted by (episode, turn); `states`: (episode, round) -> the global state before
    that turn step (`RolloutBatch.states`); `answers`: episode -> its reference answer, for a
    privileged critic (`reference_answers`). Returns each turn's point index, each episode's
    (start, end) span of points, and each point's text: the global state, the reference
    answer if given, and who acts in it."""
    answers = answers or {}
    state_of: list[int] = []
    spans: list[tuple[int, int]] = []
    keys: list[tuple[int, int]] = []
    acting: list[list[str]] = []
    seen: dict[tuple[int, int], int] = {}
    for s in turns:
        key = (s.episode, s.round)
        if key not in seen:
            if not spans or keys[-1][0] != s.episode:
                spans.append((len(keys), len(keys)))
            seen[key] = len(keys)
            keys.append(key)
            acting.append([])
            spans[-1] = (spans[-1][0], len(keys))
        state_of.append(seen[key])
        acting[seen[key]].append(s.agent)
    # The answer goes last but one, after the messages: the value keeps a state's last tokens.
    texts = [
        f"{states[key]}\n" + (f"Reference answer: {answers[key[0]]}\n" if key[0] in answers else "")
        + f"Acting now: {', '.join(who)}"
        for key, who in zip(keys, acting, strict=True)
    ]
    return state_of, spans, texts
