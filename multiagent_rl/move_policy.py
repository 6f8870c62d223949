"""The exact policy of a model over a game's legal moves, read by scoring, not sampling.

At a decision whose legal moves are listed (`Scenario(legal_moves=...)`), the probability
of each move is that of the model replying exactly it and then ending its turn, under the
chat template with the generation prompt (as the HF backend encodes a request), at the
player's sampling temperature; renormalised over the legal moves it is the policy there.
One batched, differentiable function serves training (the `all_actions` trainer) and
reading a strategy (exploitability, strategy tables), so both see the same policy.

The renormalised policy leaves out replies that are no legal move; the scores' log-sum-exp
is the log-probability that the reply is exactly one of the legal moves (the trainer's
`moves/legal_mass`).

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


PREFIX_KEY = 32  # choices whose prompts agree on this many tokens share one prefix pass (a role's system prompt)


def move_scores(model, choices: Sequence[MoveChoice], end_ids: Sequence[int], pad_id: int,
                adapter_name: str | None = None) -> list[torch.Tensor]:
    """log p(reply is exactly move m, then an end-of-turn token) for every legal move of every
    choice: one (moves,) tensor per choice, differentiable.

    Every token is run once: choices whose prompts begin alike (a role's system prompt and
    the chat template) share one pass over their longest common prefix; each prompt's rest
    follows on that prefix's key-value cache, its last position scoring every move's first
    token; its cache is then repeated once per move and the moves run on it. So M moves of C
    decisions cost one prefix, C prompt tails and C x M short replies, not C x M prompts.
    The model's active adapter scores them, or `adapter_name` for this call only (peft's
    per-request `adapter_names`, in eval mode: the active adapter and its trainable weights
    are left as they are)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, choice in enumerate(choices):
        groups.setdefault(choice.prompt_ids[:PREFIX_KEY], []).append(i)
    out: list[torch.Tensor | None] = [None] * len(choices)
    for members in groups.values():
        for i, scores in zip(members, _group_scores(model, [choices[i] for i in members], end_ids, pad_id, adapter_name),
                             strict=True):
            out[i] = scores
    return out


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row begins with, leaving each row at least one of its own."""
    shortest = min(len(r) for r in rows) - 1
    n = 0
    while n < shortest and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def _group_scores(model, choices: Sequence[MoveChoice], end_ids: Sequence[int], pad_id: int,
                  adapter_name: str | None) -> list[torch.Tensor]:
    """`move_scores` of choices that share a prompt prefix: prefix, tails, moves, one pass each."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    select = (lambda n: {"adapter_names": [adapter_name] * n}) if adapter_name is not None else (lambda n: {})
    shared = _common_prefix([c.prompt_ids for c in choices])
    cache = DynamicCache()
    if shared:
        model(input_ids=torch.tensor([choices[0].prompt_ids[:shared]], device=device), past_key_values=cache,
              use_cache=True, logits_to_keep=1, **select(1))
        cache.reorder_cache(torch.zeros(len(choices), dtype=torch.long, device=device))  # one copy per choice
    # The tails, left-padded: pads sit between the prefix and each tail, masked out.
    width = max(len(c.prompt_ids) - shared for c in choices)
    ids = torch.full((len(choices), width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(choices), width), dtype=torch.long)
    for r, choice in enumerate(choices):
        tail = choice.prompt_ids[shared:]
        ids[r, width - len(tail):] = torch.tensor(tail)
        tail_mask[r, width - len(tail):] = 1
    attention = torch.cat([torch.ones((len(choices), shared), dtype=torch.long), tail_mask], dim=1)
    positions = (attention.cumsum(1) - 1).clamp_min(0)[:, shared:]  # as if each prompt stood alone
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
