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

from .token_scoring import score_tokens


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

    Every token is run once (`token_scoring`): choices whose prompts begin alike share one
    pass over their common prefix, each prompt's rest runs once, and its cache is repeated
    once per move; so M moves of C decisions cost one prefix, C prompt tails and C x M short
    replies, not C x M prompts. The model's active adapter scores them, or `adapter_name`
    for this call only (peft's per-request `adapter_names`, in eval mode: the active adapter
    and its trainable weights are left as they are)."""
    rows = [(choice, move) for choice in choices for move in choice.moves]
    sequences = [choice.prompt_ids + move for choice, move in rows]
    # Each move's own tokens, then every end-of-turn token after its last one.
    queries = [[(len(choice.prompt_ids) + j, t) for j, t in enumerate(move)]
               + [(len(choice.prompt_ids) + len(move), e) for e in end_ids] for choice, move in rows]
    logps = score_tokens(model, sequences, queries, [choice.temperature for choice, _ in rows], pad_id, adapter_name)
    scores = torch.stack([
        lp[:len(move)].sum() + torch.logsumexp(lp[len(move):], 0)  # any end-of-turn token stops the reply
        for (_, move), lp in zip(rows, logps, strict=True)])  # (rows,)
    return list(scores.split([len(choice.moves) for choice in choices]))
