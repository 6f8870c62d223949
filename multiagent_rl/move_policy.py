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

    Each prompt is run once (left-padded, one batch), its last position scoring every move's
    first token; its key-value cache is then repeated once per move and the moves run on it
    (right-padded), so a decision with M moves costs one prompt and M short replies rather
    than M prompts. Only those positions reach the LM head. The model's active adapter scores
    them, or `adapter_name` for this call only (peft's per-request `adapter_names`, in eval
    mode: the active adapter and its trainable weights are left as they are)."""
    from transformers import DynamicCache

    if not choices:
        return []
    device = next(model.parameters()).device
    select = (lambda n: {"adapter_names": [adapter_name] * n}) if adapter_name is not None else (lambda n: {})
    width = max(len(c.prompt_ids) for c in choices)
    ids = torch.full((len(choices), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(choices), width), dtype=torch.long)
    for r, choice in enumerate(choices):
        ids[r, width - len(choice.prompt_ids):] = torch.tensor(choice.prompt_ids)
        attention[r, width - len(choice.prompt_ids):] = 1
    positions = (attention.cumsum(1) - 1).clamp_min(0)
    cache = DynamicCache()
    first = model(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                  past_key_values=cache, use_cache=True, logits_to_keep=1, **select(len(choices))).logits[:, -1]  # (C, V)
    rows = [(c, m) for c, choice in enumerate(choices) for m in choice.moves]
    owner = torch.tensor([c for c, _ in rows])
    temperature = torch.tensor([choices[c].temperature for c, _ in rows], device=device)  # (R,)
    cache.reorder_cache(owner.to(device))  # each prompt's keys and values, once per move
    longest = max(len(m) for _, m in rows)
    moves = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    lengths = torch.tensor([len(m) for _, m in rows])
    for r, (_, move) in enumerate(rows):
        moves[r, :len(move)] = torch.tensor(move)
    # Pads after a move are never attended by its own tokens (causal), so masking them is not needed.
    mask = torch.cat([attention[owner], torch.ones((len(rows), longest), dtype=torch.long)], dim=1)
    move_positions = positions[owner, -1:] + 1 + torch.arange(longest)
    logits = model(input_ids=moves.to(device), attention_mask=mask.to(device), position_ids=move_positions.to(device),
                   past_key_values=cache, use_cache=True, **select(len(rows))).logits  # (R, longest, V)
    # Position j of a move predicts its token j + 1; the prompt's last position its token 0.
    logps = torch.log_softmax(torch.cat([first[owner.to(device)].unsqueeze(1), logits], 1).float()
                              / temperature.view(-1, 1, 1), dim=-1)  # (R, longest + 1, V)
    said = logps[:, :-1].gather(2, moves.to(device).unsqueeze(2)).squeeze(2)  # (R, longest)
    inside = (torch.arange(longest).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    said = (said * inside).sum(1)
    last = logps[torch.arange(len(rows), device=device), lengths.to(device)]  # (R, V): after each move's last token
    ended = torch.logsumexp(last[:, list(end_ids)], dim=1)  # any end-of-turn token stops the reply
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
