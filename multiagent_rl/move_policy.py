"""The exact policy of a model over a game's legal moves, read by scoring, not sampling.

At a decision whose legal moves are listed (`Scenario(legal_moves=...)`), the probability
of each move is that of the model replying exactly it and then ending its turn, under the
chat template with the generation prompt (as the HF backend encodes a request), at the
player's sampling temperature; renormalised over the legal moves it is the policy there.
One batched, differentiable function serves training (the `all_actions` trainer) and
reading a strategy (exploitability, strategy tables), so both see the same policy.

The renormalised policy leaves out replies that are no legal move; `legal_mass` (the
log-probability that the reply is exactly one of the legal moves) says how much of the
model's reply distribution the listed moves hold.

>>> choices = [encode_choice(tokenizer, chat, ["Pass", "Bet"], temperature=1.0)]   # doctest: +SKIP
>>> scores = move_scores(model, choices, end_ids, pad_id)                          # doctest: +SKIP
>>> torch.softmax(scores[0], 0)   # the policy over Pass, Bet                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MoveChoice:
    """One decision to score: the prompt's tokens, each legal move's reply tokens, and the
    temperature its policy is read at."""

    prompt_ids: tuple[int, ...]
    moves: tuple[tuple[int, ...], ...]
    temperature: float = 1.0


def encode_choice(tokenizer, chat: Sequence[Mapping[str, str]], moves: Sequence[str], temperature: float = 1.0) -> MoveChoice:
    """A decision as token ids: the chat with the generation prompt, and each move's reply."""
    ids = tokenizer.apply_chat_template([dict(m) for m in chat], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    replies = tuple(tuple(tokenizer.encode(move, add_special_tokens=False)) for move in moves)
    empty = [m for m, r in zip(moves, replies, strict=True) if not r]
    if empty:
        raise ValueError(f"legal move {empty[0]!r} encodes to no tokens; a move must be a non-empty reply")
    # Greedy players (temperature 0) are read at temperature 1, as the update scores them.
    return MoveChoice(tuple(ids), replies, temperature if temperature > 0 else 1.0)


def move_scores(model, choices: Sequence[MoveChoice], end_ids: Sequence[int], pad_id: int,
                adapter_name: str | None = None) -> list[torch.Tensor]:
    """log p(reply is exactly move m, then an end-of-turn token) for every legal move of every
    choice: one (moves,) tensor per choice, differentiable.

    All (choice, move) rows go through the model in one left-padded batch; only the last
    (longest move + 1) positions reach the LM head. The model's active adapter scores them,
    or `adapter_name` for this pass only (peft's per-request `adapter_names`, in eval mode:
    the active adapter and its trainable weights are left as they are)."""
    rows = [(c, m) for c in choices for m in c.moves]
    if not rows:
        return []
    forward = {"adapter_names": [adapter_name] * len(rows)} if adapter_name is not None else {}
    device = next(model.parameters()).device
    window = max(len(m) for _, m in rows)
    width = max(len(c.prompt_ids) + len(m) for c, m in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.zeros((len(rows), window), dtype=torch.long)  # each move's tokens, right-aligned
    mask = torch.zeros((len(rows), window))
    for r, (choice, move) in enumerate(rows):
        seq = [*choice.prompt_ids, *move]
        ids[r, width - len(seq):] = torch.tensor(seq)
        attention[r, width - len(seq):] = 1
        targets[r, window - len(move):] = torch.tensor(move)
        mask[r, window - len(move):] = 1
    positions = (attention.cumsum(1) - 1).clamp_min(0)
    temperature = torch.tensor([c.temperature for c, _ in rows]).view(-1, 1, 1)
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                   logits_to_keep=window + 1, **forward).logits  # (R, window + 1, V): position t predicts t+1
    logps = torch.log_softmax(logits.float() / temperature.to(device), dim=-1)
    said = logps[:, :-1].gather(2, targets.to(device).unsqueeze(2)).squeeze(2)  # (R, window)
    said = (said * mask.to(device)).sum(1)  # (R,)
    ended = torch.logsumexp(logps[:, -1, list(end_ids)], dim=1)  # (R,): any end-of-turn token stops the reply
    scores = said + ended
    out, start = [], 0
    for choice in choices:
        out.append(scores[start:start + len(choice.moves)])
        start += len(choice.moves)
    return out


def policy_and_legal_mass(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy over the legal moves (renormalised) and the log-probability that the reply
    is one of them at all, from one choice's scores. (M,) -> ((M,), ())."""
    return torch.softmax(scores, dim=0), torch.logsumexp(scores, dim=0)
