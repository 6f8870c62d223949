"""The all-actions trainer: for games that list their legal moves, every move's value at each
forked decision and the policy's exact gradient over them, with a KL to a magnet.

The rollout forks each trainable decision once per legal move (`rollout.move_forks`), the
move forced, the rest played by the current policies; so the leaves below a decision hold
each move's value there under today's policy (Q). The policy at a decision is the model's
exact distribution over the legal moves (`multiagent_rl.move_policy`). The loss, per
decision d with moves i:

    - sum_i pi_i * (Q_i - V)                      V = sum_i pi_i Q_i (detached)
    + magnet_coef * KL(pi || magnet)              on every decision, whatever the rewards
    - legal_coef * mean_i log P(reply is move i)  the mass renormalising leaves untrained

Move values are play alone: shaping terms (`shaping.terms`) are left out of the returns.
Where one information state is met at several decisions (the same chat and moves, in several
deals or lines of play), its advantages are averaged with weights w_d, each decision's
counterfactual reach: the product of the other players' probabilities of the forced moves
on its path (its own and chance's are left out). That is the expected advantage given that
the state is reached, behavioural-form MMD's action values: every state learns at full size
however rarely it is reached. Where a forked decision lies below another, its value is
the policy-weighted value of its children (exact expectations through the fork tree); below
an unforked turn, the leaf's sampled return.

The magnet (Sokota et al., magnetic mirror descent, ICLR 2023): `uniform` is the uniform
policy over the legal moves (the KL is then an entropy bonus: the last iterate approaches a
quantal response equilibrium, closer to a Nash equilibrium as magnet_coef falls); `snapshot`
keeps a frozen copy of each adapter refreshed every `magnet_every` updates, a moving magnet;
`base` is the base model; `none` drops the term. Identical decisions (the same chat and moves, as an information state
met in several deals) are scored once, with their reach-weighted mean advantage counted once
per decision; so are the regularisers.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from multiagent_rl.adapters import LoraSettings, enable_training
from multiagent_rl.backends.hf import BASE_ADAPTER, end_token_ids
from multiagent_rl.config import ConfigError
from multiagent_rl.move_policy import MoveChoice, encode_choice, move_scores
from multiagent_rl.rollout import Decision, RolloutBatch

from .base import Trainer, TrainerContext, register_trainer
from .magnet import Magnets
from .policy import _chunks

STATE_FILE = "all_actions_state.json"

Node = tuple[int, tuple[int, ...]]  # (task group, path in its tree)


# ----- values over the fork tree ---------------------------------------------------------


@dataclass
class MoveValues:
    """Each decision's move values for its own agent, the counterfactual reach weight, and
    its advantages (Q_i - sum_j pi_j Q_j)."""

    q: list[list[float]]
    weights: list[float]
    advantages: list[list[float]]


def move_values(decisions: Sequence[Decision], probs: Sequence[Sequence[float]],
                leaves: Mapping[Node, Mapping[str, float]]) -> MoveValues:
    """Q of every move at every forked decision from the leaves' returns ({(group, path):
    {agent: return}}), through the tree: a decision node's value is its children's weighted
    by its policy `probs`; any other inner node's is its children's mean (samples of a group,
    a `rollout.branching` fork); a leaf's is its return.

    >>> d = Decision(0, "a", "x", 0, (0,), [], ["L", "R"], 1.0)
    >>> mv = move_values([d], [[0.25, 0.75]], {(0, (0, 0)): {"a": 1.0}, (0, (0, 1)): {"a": -1.0}})
    >>> mv.q, mv.advantages
    ([[1.0, -1.0]], [[1.5, -0.5]])
    """
    at = {(d.group, d.node): k for k, d in enumerate(decisions)}
    children: dict[Node, set[int]] = defaultdict(set)
    for group, path in leaves:
        for depth in range(1, len(path)):
            children[(group, path[:depth])].add(path[depth])
    memo: dict[Node, dict[str, float]] = {}

    def value(node: Node) -> dict[str, float]:
        if node in leaves:
            return dict(leaves[node])
        if node in memo:
            return memo[node]
        group, path = node
        if node in at:
            k = at[node]
            parts = [(p, value((group, (*path, i)))) for i, p in enumerate(probs[k])]
        else:
            kids = sorted(children.get(node, ()))
            if not kids:
                raise ValueError(f"tree node {node} has no leaf below it")
            parts = [(1.0 / len(kids), value((group, (*path, i)))) for i in kids]
        agents = {a for _, v in parts for a in v}
        memo[node] = {a: sum(p * v.get(a, 0.0) for p, v in parts) for a in agents}
        return memo[node]

    q, weights, advantages = [], [], []
    for k, d in enumerate(decisions):
        row = [value((d.group, (*d.node, i))).get(d.agent, 0.0) for i in range(len(d.moves))]
        mean = sum(p * x for p, x in zip(probs[k], row, strict=True))
        q.append(row)
        advantages.append([x - mean for x in row])
        weight = 1.0
        for depth in range(1, len(d.node)):  # forced moves above it, by other players
            above = at.get((d.group, d.node[:depth]))
            if above is not None and decisions[above].agent != d.agent:
                weight *= probs[above][d.node[depth]]
        weights.append(weight)
    return MoveValues(q, weights, advantages)


def leaf_returns(batch: RolloutBatch, leave_out: Sequence[str] = ()) -> dict[Node, dict[str, float]]:
    """Every finished episode's return per agent, keyed by its place in its task's tree, the
    ledger terms `leave_out` (shaping) left out."""
    weights = dict.fromkeys(leave_out, 0.0)
    return {(ep.group, tuple(ep.branch)): (ep.reweighted(weights) if weights else ep).returns() for ep in batch.episodes}


# ----- the loss ------------------------------------------------------------------------


def all_actions_loss(scores: torch.Tensor, coef: torch.Tensor, magnet_logp: torch.Tensor | None, visits: float,
                     magnet_coef: float, legal_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one distinct decision (to minimise) from its moves' scores (M,) (log-prob
    of replying exactly each move, differentiable), the summed advantage coefficients (M,)
    of the decisions it stands for, the magnet's log-policy (M,) (None: no magnet), and
    `visits`, how many decisions it stands for (the regularisers count each).

    The legality term raises every legal reply's log-probability alike: raising their total
    (a log-sum-exp) would favour whichever move is already likelier, and collapse the policy.

    >>> loss, parts = all_actions_loss(torch.zeros(2), torch.tensor([1.0, -1.0]), None, 1, 0.0, 0.0)
    >>> float(loss), float(parts["entropy"])
    (-0.0, 0.6931471824645996)
    """
    logp = torch.log_softmax(scores, dim=0)  # (M,): the policy over the legal moves
    pi = logp.exp()
    pg = -(pi * coef).sum()
    legal = torch.logsumexp(scores, dim=0).exp()  # P(the reply is one of the legal moves)
    loss = pg - legal_coef * visits * scores.mean()
    kl = torch.zeros(())
    if magnet_logp is not None:
        kl = (pi * (logp - magnet_logp)).sum()
        loss = loss + magnet_coef * visits * kl
    entropy = -(pi * logp).sum()
    return loss, {"kl": kl.detach(), "legal": legal.detach(), "entropy": entropy.detach()}


# ----- the trainer ---------------------------------------------------------------------


@register_trainer("all_actions")
class AllActionsTrainer(Trainer):
    """`trainer: all_actions` (settings: the `all_actions:` section; needs `rollout.move_forks`
    and a scenario whose `legal_moves` lists its moves)."""

    def __init__(self, ctx: TrainerContext):
        super().__init__(ctx)
        if ctx.scenario.legal_moves is None:
            raise ConfigError(
                f"trainer=all_actions needs a game that lists its legal moves; scenario {ctx.scenario.name!r} has no "
                "legal_moves hook (OpenSpiel and PettingZoo games have one; give Scenario(legal_moves=...))")
        self.settings = ctx.config.all_actions
        self.end_ids = end_token_ids(ctx.model, ctx.tokenizer)
        self.updates = 0
        self.magnets = (Magnets(ctx.model, ctx.policy_adapters, LoraSettings.from_config(ctx.config.lora),
                                self.settings.magnet_every) if self.settings.magnet == "snapshot" else None)
        # The magnet's policy at each distinct decision met since its last refresh: it does not
        # move in between, so a state met again (Kuhn poker: every step) is not scored again.
        self.magnet_cache: dict[tuple[str, MoveChoice], torch.Tensor] = {}

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps({"updates": self.updates}))
        if self.magnets is not None:
            self.magnets.save(folder)

    def load(self, folder: Path) -> str | None:
        self.magnet_cache.clear()
        if not (folder / STATE_FILE).is_file():
            if self.magnets is not None:
                self.magnets.refresh()
            return f"{folder.name} holds no all_actions state: the magnet starts from the checkpoint's adapters"
        self.updates = json.loads((folder / STATE_FILE).read_text())["updates"]
        return self.magnets.load(folder) if self.magnets is not None else None

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        ctx, settings = self.ctx, self.settings
        model, ranks = ctx.model, ctx.ranks
        decisions = [d for d in batch.decisions if d.adapter in ctx.policy_adapters]
        unforked = sum(1 for s in batch.samples if s.trainable)
        # Distinct decisions (adapter, chat, moves, temperature) are scored once.
        keys = [(d.adapter, json.dumps(d.chat), tuple(d.moves), d.temperature) for d in decisions]
        distinct = list(dict.fromkeys(keys))
        where = {key: i for i, key in enumerate(distinct)}
        choices = [encode_choice(ctx.tokenizer, json.loads(chat), moves, temp) for _, chat, moves, temp in distinct]
        adapters = [key[0] for key in distinct]
        micro = max(1, ctx.config.micro_batch_size)
        # One adapter's decisions that fit one micro-batch: the forward with gradients also
        # gives the policy the values need (no separate read).
        live: list[torch.Tensor] | None = None
        model.train()
        if len(set(adapters)) == 1 and len(choices) <= micro:
            model.set_adapter(adapters[0])
            enable_training(model, adapters[:1])
            live = move_scores(model, choices, self.end_ids, ctx.tokenizer.pad_token_id)
            policy = [torch.softmax(row.detach().float(), 0).tolist() for row in live]
        else:
            policy = [logp.exp().tolist() for logp in self._read(choices, adapters, magnet=False)]
        # Play alone: a forced move is legal by construction, and legality has its own term.
        values = move_values(decisions, [policy[where[k]] for k in keys], leaf_returns(batch, ctx.config.shaping.terms))
        # A distinct decision (an information state met in several deals) learns from its
        # advantages averaged with the reach weights, the expected advantage given that it is
        # reached (behavioural-form MMD's q): a rarely reached state learns at full size.
        weighted = [torch.zeros(len(c.moves), dtype=torch.float64) for c in choices]
        reach = [0.0] * len(choices)
        plain = [torch.zeros(len(c.moves), dtype=torch.float64) for c in choices]
        visits = [0.0] * len(choices)
        for k, key in enumerate(keys):
            i = where[key]
            advantage = torch.tensor(values.advantages[k], dtype=torch.float64)
            weighted[i] += values.weights[k] * advantage
            reach[i] += values.weights[k]
            plain[i] += advantage
            visits[i] += 1
        coef = [(visits[i] * (weighted[i] / reach[i] if reach[i] > 1e-12 else plain[i] / visits[i])).float()
                for i in range(len(choices))]
        if settings.magnet == "uniform":  # KL to uniform over the legal moves: an entropy bonus, MMD's usual magnet
            magnet_logp = [torch.full((len(c.moves),), -math.log(len(c.moves))) for c in choices]
        else:
            magnet_logp = self._magnet(choices, adapters) if settings.magnet != "none" else None
        (total,) = ranks.sum([float(len(decisions))])
        counts = defaultdict(float)
        self.optimizer.zero_grad(set_to_none=True)
        if total:
            for adapter in dict.fromkeys(adapters):
                model.set_adapter(adapter)
                enable_training(model, [adapter])
                mine = [i for i, a in enumerate(adapters) if a == adapter]
                for chunk in _chunks(mine, micro):
                    scores = live if live is not None else move_scores(
                        model, [choices[i] for i in chunk], self.end_ids, ctx.tokenizer.pad_token_id)
                    loss = torch.zeros((), device=scores[0].device)
                    for i, row in zip(chunk, scores, strict=True):
                        device = row.device
                        mlogp = magnet_logp[i].to(device) if magnet_logp is not None else None
                        part, parts = all_actions_loss(row.float(), coef[i].to(device), mlogp, visits[i],
                                                       settings.magnet_coef, settings.legal_coef)
                        loss = loss + part
                        for name, value in parts.items():
                            counts[name] += float(value) * visits[i]
                    ctx.accelerator.backward(loss / total)
                    counts["loss"] += float(loss.detach()) / total
        enable_training(model, ctx.policy_adapters)
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        ranks.sum_gradients(trainable)
        params = [p for p in trainable if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, ctx.config.max_grad_norm) if params else torch.tensor(0.0)
        if total:
            self.optimizer.step()
            self.scheduler.step()
            self.updates += 1
            if self.magnets is not None and self.magnets.after_update(self.updates):
                self.magnet_cache.clear()
        spread = sum(max(row) - min(row) for row in values.q)
        names = ("loss", "kl", "legal", "entropy")
        summed = ranks.sum([counts[n] for n in names] + [spread, float(len(distinct)), float(unforked)])
        sums = dict(zip(names, summed[:len(names)], strict=True))
        if not math.isfinite(sums["loss"]):
            raise FloatingPointError(f"all_actions loss is {sums['loss']}; lower lr or check rewards")
        per = max(total, 1.0)
        return {
            "loss/policy": sums["loss"], "loss/magnet_kl": sums["kl"] / per,
            "moves/legal_mass": sums["legal"] / per, "moves/entropy": sums["entropy"] / per,
            "moves/decisions": total, "moves/distinct_decisions": summed[-2], "moves/value_spread": summed[-3] / per,
            "moves/unforked_turns": summed[-1], "grad_norm": float(grad_norm), "update/skipped": float(not total),
            "update/optimizer_steps": float(bool(total)), "update/count": float(self.updates),
        }

    def _magnet(self, choices: Sequence[MoveChoice], adapters: Sequence[str]) -> list[torch.Tensor]:
        """The magnet's log-policy at each decision, scored only where not cached."""
        new = [i for i, key in enumerate(zip(adapters, choices, strict=True)) if key not in self.magnet_cache]
        read = self._read([choices[i] for i in new], [adapters[i] for i in new], magnet=True)
        self.magnet_cache.update({(adapters[i], choices[i]): logp for i, logp in zip(new, read, strict=True)})
        return [self.magnet_cache[key] for key in zip(adapters, choices, strict=True)]

    def _read(self, choices: Sequence[MoveChoice], adapters: Sequence[str], magnet: bool) -> list[torch.Tensor]:
        """The log-policy over moves at each distinct decision, detached: under its adapter, or
        under its magnet (the adapter's snapshot, or the base model)."""
        model = self.ctx.model
        out: list[torch.Tensor | None] = [None] * len(choices)
        was_training = model.training
        model.eval()  # peft takes per-pass adapter_names only in eval mode
        try:
            with torch.no_grad():
                for adapter in dict.fromkeys(adapters):
                    name = adapter if not magnet else (self.magnets.names[adapter] if self.magnets else BASE_ADAPTER)
                    mine = [i for i, a in enumerate(adapters) if a == adapter]
                    for chunk in _chunks(mine, max(1, self.ctx.config.micro_batch_size)):
                        scores = move_scores(model, [choices[i] for i in chunk], self.end_ids,
                                             self.ctx.tokenizer.pad_token_id, adapter_name=name)
                        for i, row in zip(chunk, scores, strict=True):
                            out[i] = torch.log_softmax(row.float(), 0).cpu()
        finally:
            model.train(was_training)
        return out
