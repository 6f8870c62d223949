"""Log-probs of given tokens under a causal LM: every distinct token run once, and no
(rows x tokens x vocabulary) tensor alive, in the forward or the backward pass.

One function, `score_tokens`, serves every place a policy log-prob is computed: the
policy update and its reference pass (`completion_logprobs`), and the exact policy over a
game's legal moves (`move_policy`, for training and exploitability alike). Both savings
are exact: scores and gradients equal a plain forward over each sequence within
floating-point tolerance (tests/test_token_scoring.py).

- **Shared prefixes run once (a prefix forest of three levels).** A sequence that is the
  start of another (a sample identical to another; an agent's earlier turn inside its
  later, longer chat) is read off the longer one. The others are grouped by their first
  `PREFIX_KEY` tokens (a role's system prompt and the chat template) and the group's
  common prefix runs once; within a group, sequences that share at least `CLUSTER_KEY`
  more tokens (the G samples of one prompt; a prompt's legal moves) share that stretch;
  each sequence's own rest runs last. One batched pass per level, each on the key-value
  cache of the level above, repeated once per child: gradients flow back through it.
  This layout (a shared-prefix forward rather than packing several sequences into one
  row) keeps each batch a plain left-padded tensor that every model's attention and
  position handling accepts, with no block-diagonal masks.
- **Log-probs from the final hidden states in chunks of `CHUNK_TOKENS` positions**, and
  only at the positions asked for; each chunk's logits are recomputed in the backward
  pass (activation checkpointing), so at most one chunk's logits exist at a time.

>>> score_tokens(model, [prompt + reply], [[(len(prompt) + j, t) for j, t in enumerate(reply)]], [1.0], pad_id)  # doctest: +SKIP
[tensor([-2.31, -0.07])]
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

PREFIX_KEY = 32  # sequences that agree on this many tokens share one pass over their common prefix
CLUSTER_KEY = 16  # ...and, inside such a group, those sharing this many more tokens share that stretch
CHUNK_TOKENS = 256  # positions whose logits exist at once (256 x 49,152 floats: 50 MB)
HOST = "cpu"  # where layouts and indices are built, whatever the default device; moved to the model's in one copy


def score_tokens(
    model,
    sequences: Sequence[Sequence[int]],
    queries: Sequence[Sequence[tuple[int, int]]],
    temperatures: Sequence[float],
    pad_id: int,
    adapter_name: str | None = None,
    allowed: Sequence[Sequence[int] | None] | None = None,
) -> list[torch.Tensor]:
    """log p(token t at index p | the sequence's first p tokens) for every query (p, t) of
    every sequence, at that sequence's temperature: one (queries,) tensor per sequence,
    differentiable. p runs from 1 to len(sequence) (p = len asks what would follow it: an
    end-of-turn token, say); t need not be the sequence's own token there.

    The model's active adapter scores them, or `adapter_name` for this call only (peft's
    per-request `adapter_names`: the active adapter and its trainable weights are left as
    they are). `allowed`: per sequence, the tokens its queries are renormalised over (a
    symbol channel's: what the sampler was restricted to), or None for the whole vocabulary."""
    if not (len(sequences) == len(queries) == len(temperatures)):
        raise ValueError(f"score_tokens needs one query list and temperature per sequence; got {len(sequences)} "
                         f"sequences, {len(queries)} query lists, {len(temperatures)} temperatures")
    for s, (seq, asked) in enumerate(zip(sequences, queries, strict=True)):
        bad = [p for p, _ in asked if not 1 <= p <= len(seq)]
        if bad:
            raise ValueError(f"sequence {s} has {len(seq)} tokens; query position {bad[0]} is outside 1..{len(seq)}")
    device = next(model.parameters()).device
    forest = _Forest.build([tuple(s) for s in sequences], [adapter_name] * len(sequences), share=_can_share(model))
    hidden = forest.run(model, pad_id, device)  # per level (nodes, width, H) or None
    flat = torch.cat([h.flatten(0, 1) for h in hidden if h is not None])  # (sum of nodes x width, H)
    rows, targets, scale = [], [], []
    for s, asked in enumerate(queries):
        for p, token in asked:
            rows.append(forest.flat_index(s, p - 1))  # the hidden state after token p - 1 predicts token p
            targets.append(token)
            scale.append(1.0 / max(float(temperatures[s]), 1e-6))
    if not rows:
        return [flat.new_zeros(0) for _ in sequences]
    head, softcap = _lm_head(model)
    restrict = _restrictions(allowed, queries, head.weight.shape[0], device) if allowed is not None else None
    logps = chunked_logprobs(head, flat[torch.tensor(rows, device=device)], torch.tensor(targets, device=device),
                             torch.tensor(scale, dtype=torch.float64, device=device), softcap,
                             restrict=restrict)  # (queries,)
    return list(logps.split([len(q) for q in queries]))


def completion_logprobs(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        temperatures: Sequence[float], pad_id: int,
                        allowed: Sequence[Sequence[int] | None] | None = None) -> list[torch.Tensor]:
    """log p of each completion's tokens after its prompt: one (len(completion),) tensor each
    (`allowed`: as `score_tokens`)."""
    sequences = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    queries = [[(len(p) + j, t) for j, t in enumerate(c)] for p, c in zip(prompts, completions, strict=True)]
    if allowed is not None and all(a is None for a in allowed):
        allowed = None
    return score_tokens(model, sequences, queries, temperatures, pad_id, allowed=allowed)


@torch.no_grad()
def prefill(model, prompts: Sequence[Sequence[int]], adapters: Sequence[str | None], pad_id: int):
    """Encode a generation batch's prompts with shared prefixes run once: (input_ids,
    attention_mask, cache) to hand to `generate(past_key_values=...)`, which then runs only
    each prompt's last token before sampling. The cache holds every other prompt token;
    padding sits between the shared stretches (masked, positions counted as if each prompt
    stood alone), so the sampled tokens are those of a plain left-padded batch. A prompt that
    is the start of another's is read off it, the other's later tokens masked out.
    `adapters`: per prompt, the peft adapter that runs it (None: the active one)."""
    device = next(model.parameters()).device
    heads = [tuple(p[:-1]) for p in prompts]
    forest = _Forest.build(heads, adapters)
    forest.run(model, pad_id, device)
    leaf = torch.tensor([forest.chain[forest.row_of[i]][2] for i in range(len(prompts))], device=HOST)
    forest.cache.reorder_cache(leaf.to(device))  # one cache row per prompt
    ids, mask = forest.layout[0][leaf], forest.layout[1][leaf]  # (B, W)
    own = torch.tensor([len(h) for h in heads], device=HOST).unsqueeze(1)
    mask = mask * (mask.cumsum(1) <= own)  # a shorter prompt read off a longer one stops at its own end
    last = torch.tensor([[p[-1]] for p in prompts], device=HOST)  # (B, 1)
    ones = torch.ones_like(last)
    return torch.cat([ids, last], 1).to(device), torch.cat([mask, ones], 1).to(device), forest.cache


def chunked_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                     softcap: float | None = None, chunk: int = CHUNK_TOKENS,
                     restrict: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """log softmax(head(hidden) * scale)[target] per row, `chunk` rows of logits at a time.

    hidden: (N, H); targets: (N,); scale: (N,) inverse temperatures -> (N,). With gradients
    on, each chunk is checkpointed: its logits are dropped after the forward and remade in
    the backward, so memory holds one chunk's (chunk, vocabulary) logits, not N's.
    `restrict`: (sets (S, V) bool, set of each row (N,), -1 for none): a row with a set is
    renormalised over that set's tokens only."""
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    sets, which = restrict if restrict is not None else (None, None)
    score = partial(_chunk_logprobs, head, softcap=softcap, sets=sets)
    out = []
    for start in range(0, hidden.shape[0], chunk):
        part = (hidden[start:start + chunk], targets[start:start + chunk], scale[start:start + chunk],
                which[start:start + chunk] if which is not None else None)
        out.append(checkpoint(score, *part, use_reentrant=False) if recompute else score(*part))
    return torch.cat(out) if out else hidden.new_zeros(0)


def _chunk_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                    which: torch.Tensor | None, softcap: float | None, sets: torch.Tensor | None) -> torch.Tensor:
    logits = head(hidden)  # (n, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # at least float32 (bf16 autocast)
    if softcap:  # models that cap their logits (Gemma 2) do it before any temperature
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits * scale.to(logits.dtype).unsqueeze(1)
    if sets is not None and bool((which >= 0).any()):
        keep = sets[which.clamp_min(0)] | (which < 0).unsqueeze(1)  # (n, V): unrestricted rows keep all
        logits = logits.masked_fill(~keep, float("-inf"))
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=1)  # (n,)


def _restrictions(allowed: Sequence[Sequence[int] | None], queries: Sequence[Sequence[tuple[int, int]]],
                  vocabulary: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(sets (S, V) bool, the set of each query in order (-1: none)) for `chunked_logprobs`."""
    if len(allowed) != len(queries):
        raise ValueError(f"allowed has {len(allowed)} entries for {len(queries)} sequences")
    distinct: dict[tuple[int, ...], int] = {}
    which: list[int] = []
    for ids, asked in zip(allowed, queries, strict=True):
        key = tuple(ids) if ids is not None else None
        if key is not None and key not in distinct:
            distinct[key] = len(distinct)
        which.extend([distinct[key] if key is not None else -1] * len(asked))
    sets = torch.zeros(max(len(distinct), 1), vocabulary, dtype=torch.bool, device=HOST)
    for ids, s in distinct.items():
        sets[s, list(ids)] = True
    return sets.to(device), torch.tensor(which, dtype=torch.long, device=HOST).to(device)


def _base(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _can_share(model) -> bool:
    """Whether passes may run on a cache: transformers' gradient checkpointing drops the
    cache in training, so a checkpointed model runs each row whole (identical samples and a
    sequence inside a longer one are still read off one row)."""
    return not (model.training and getattr(_base(model), "is_gradient_checkpointing", False))


def _lm_head(model):
    base = _base(model)
    return base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def _adapters(model, names: Sequence[str | None]):
    """Run each batch row with its own adapter (peft's mixed batch), or the active one."""
    if all(n is None for n in names):
        return nullcontext()
    return model._enable_peft_forward_hooks(adapter_names=list(names))


def _decoder(model):
    return _base(model).get_decoder()  # the model without its LM head: final hidden states out


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row begins with, leaving each row one of its own."""
    shared = min((_shared(rows[0], r) for r in rows[1:]), default=len(rows[0]))
    return min(shared, min(len(r) for r in rows) - 1)


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens two sequences begin with alike."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Forest:
    """Three levels of nodes (group prefixes, cluster stretches, each row's rest); row r's
    tokens are the concatenation of its group's, its cluster's and its own stretch. Nodes
    belong to one adapter (`owners`): keys and values differ between adapters, so only
    sequences of the same adapter share a node."""

    stretches: list[list[tuple[int, ...]]]  # per level, per node: its tokens
    parents: list[list[int]]  # per level, per node: its parent's index one level up (level 0: 0)
    owners: list[str | None]  # per group (level-0 node): the adapter that runs it (None: the active one)
    row_of: list[int]  # per sequence: the row it is read from
    chain: list[tuple[int, int, int]]  # per row: its node at levels 0, 1, 2
    widths: list[int] | None = None  # per level: its padded width (set by run)
    layout: tuple[torch.Tensor, torch.Tensor] | None = None  # per leaf (ids, mask) over all levels' columns (set by run)
    cache: object = None  # the keys and values of every leaf's columns, one cache row per leaf (set by run)

    @classmethod
    def build(cls, sequences: Sequence[tuple[int, ...]], owners: Sequence[str | None] | None = None,
              share: bool = True) -> _Forest:
        owners = list(owners) if owners is not None else [None] * len(sequences)
        if any(not s for s in sequences):
            raise ValueError("every sequence to score needs at least one token")
        # A sequence that begins another longer (or equal) one of its adapter is read off that
        # one: in (adapter, tokens) order, it is then a prefix of its successor.
        order = sorted(range(len(sequences)), key=lambda i: (str(owners[i]), sequences[i]))
        row_of = [0] * len(sequences)
        rows: list[tuple[int, ...]] = []
        row_owner: list[str | None] = []
        for k in reversed(range(len(order))):
            i = order[k]
            if k + 1 < len(order):
                successor = order[k + 1]
                longer = rows[row_of[successor]]
                if owners[i] == owners[successor] and longer[:len(sequences[i])] == sequences[i]:
                    row_of[i] = row_of[successor]
                    continue
            row_of[i] = len(rows)
            rows.append(sequences[i])
            row_owner.append(owners[i])
        groups: dict[tuple, list[int]] = {}
        for r, row in enumerate(rows):
            groups.setdefault((str(row_owner[r]), row[:PREFIX_KEY]) if share else r, []).append(r)
        stretches: list[list[tuple[int, ...]]] = [[], [], []]
        parents: list[list[int]] = [[], [], []]
        group_owner: list[str | None] = []
        chain: list[tuple[int, int, int]] = [(0, 0, 0)] * len(rows)
        for members in groups.values():
            members.sort(key=lambda r: rows[r])
            group = len(stretches[0])
            cut = _common_prefix([rows[r] for r in members]) if share else 0
            stretches[0].append(rows[members[0]][:cut])
            parents[0].append(0)
            group_owner.append(row_owner[members[0]])
            clusters = [[members[0]]]
            for previous, r in zip(members, members[1:], strict=False):
                if _shared(rows[previous], rows[r]) >= cut + CLUSTER_KEY:
                    clusters[-1].append(r)
                else:
                    clusters.append([r])
            for cluster in clusters:
                node = len(stretches[1])
                split = _common_prefix([rows[r] for r in cluster]) if share else 0
                stretches[1].append(rows[cluster[0]][cut:split])
                parents[1].append(group)
                for r in cluster:
                    chain[r] = (group, node, len(stretches[2]))
                    stretches[2].append(rows[r][split:])
                    parents[2].append(node)
        return cls(stretches, parents, group_owner, row_of, chain)

    def run(self, model, pad_id: int, device) -> list[torch.Tensor | None]:
        """Each level's final hidden states, (nodes, width, H), its stretches left-padded;
        None for a level whose stretches are all empty (width 0). Leaves `layout` and
        `cache` for a generation to continue from."""
        from transformers import DynamicCache

        decoder = _decoder(model)
        cache = DynamicCache()
        owner: torch.Tensor | None = None  # per node of this level: its row in the cache (None: empty cache)
        columns: list[tuple[torch.Tensor, torch.Tensor]] = []  # per level (ids, mask), each (nodes, width)
        counts = torch.zeros(1, dtype=torch.long, device=HOST)  # per node: real tokens before its stretch
        group = torch.zeros(1, dtype=torch.long, device=HOST)  # per node: its group, whose owner runs it
        hidden, self.widths = [], []
        for level, (stretch, parent) in enumerate(zip(self.stretches, self.parents, strict=True)):
            up = torch.tensor(parent, device=HOST)
            group = torch.arange(len(stretch), device=HOST) if level == 0 else group[up]
            width = max(len(s) for s in stretch)
            ids = torch.full((len(stretch), width), pad_id, dtype=torch.long, device=HOST)
            mask = torch.zeros((len(stretch), width), dtype=torch.long, device=HOST)
            for n, s in enumerate(stretch):
                if s:
                    ids[n, width - len(s):] = torch.tensor(s, device=HOST)
                    mask[n, width - len(s):] = 1
            # Each earlier level's columns, as this node's ancestors had them.
            columns = [(i[up], m[up]) for i, m in columns] + [(ids, mask)]
            before = counts[up]  # (nodes,)
            counts = before + mask.sum(1)
            owner = owner[up] if owner is not None else None
            self.widths.append(width)
            if width == 0:
                hidden.append(None)
                continue
            positions = (before.unsqueeze(1) + mask.cumsum(1) - 1).clamp_min(0)  # as if each sequence stood alone
            if owner is not None:
                cache.reorder_cache(owner.to(device))  # the level above's keys and values, once per child
            with _adapters(model, [self.owners[g] for g in group.tolist()]):
                out = decoder(input_ids=ids.to(device), attention_mask=torch.cat([m for _, m in columns], 1).to(device),
                              position_ids=positions.to(device), past_key_values=cache, use_cache=True)
            hidden.append(out.last_hidden_state)  # (nodes, width, H)
            owner = torch.arange(len(stretch), device=HOST)
        # Every row keeps a token of its own, so the last level always runs: one cache row per leaf.
        self.layout = (torch.cat([i for i, _ in columns], 1), torch.cat([m for _, m in columns], 1))
        self.cache = cache
        return hidden

    def flat_index(self, sequence: int, index: int) -> int:
        """Where the hidden state at token `index` of `sequence` sits in the levels' flattened
        outputs (set by `run`)."""
        chain = self.chain[self.row_of[sequence]]
        offset = 0
        for level, node in enumerate(chain):
            length = len(self.stretches[level][node])
            if index < length:
                width = self.widths[level]
                return offset + node * width + (width - length) + index
            index -= length
            offset += len(self.stretches[level]) * self.widths[level]
        raise IndexError(f"token {index} is past the end of sequence {sequence}")
