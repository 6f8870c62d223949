"""A centralised critic: a value model over the global state at each turn, per-turn
advantages by GAE, and the clipped policy update of each agent's adapter.

The value model reads what `TeamEnv.state()` gives when a round's turns are taken (the
task, every private view, every message so far) and who acts in it, and outputs one value
per stream: per team (cooperative scenarios: one for all) or per agent. By default it is the
policy's own base model with a LoRA adapter of its own and a small linear head on the last
token's hidden state, so no second copy of the base model sits in memory.

Each episode's decision points (the state before each round; the agents acting in one
round move jointly on it, and in a turn-based game that is one agent) form one sequence.
A point's reward comes from the episode's ledger: each per-turn reward at the point of the
turn that earned it, each agent's final reward at that agent's last point (a team stream
takes the team's mean). GAE (the `critic.advantage` estimator) runs over the sequence at the
action level: a point bootstraps from the value at the next point, whoever acts in it;
gamma = lam = 1 gives Monte Carlo returns. Every turn gets its point's advantage for its own
stream. The maths are pure functions of tensors (`trainers/gae.py`); what the value reads
and the value model itself are in `trainers/value_model.py`.

Options for LLM teams (`critic:`): `value_warmup_steps` trains the value alone for the first
steps, `whiten_below_explained_variance` stops whitening once the values explain the returns,
and `privileged` lets the value read the task's reference answer, which no policy sees.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multiagent_rl.adapters import LoraSettings, add_adapters, attach_adapters, enable_training
from multiagent_rl.models import load_model
from multiagent_rl.rollout import RolloutBatch, TurnSample

from .base import Returns, Trainer, TrainerContext, advantage_estimator, register_trainer
from .checkpoint import load_optimizer_state, optimizer_state
from .gae import RunningNorm, clipped_value_loss, explained_variance, whitens
from .grpo import episode_returns, group_estimate
from .policy import Sample, policy_update
from .value_model import VALUE_ADAPTER, ValueModel, decision_points, reference_answers

# The policy metrics of a value warm-up step: its policy update is skipped on purpose.
WARMUP_POLICY_METRICS = {"update/skipped": 1.0, "loss/policy": 0.0, "loss/kl": 0.0, "policy/clip_fraction": 0.0,
                         "grad_norm": 0.0, "update/optimizer_steps": 0.0}

# ----- the trainer -------------------------------------------------------------------------


@register_trainer("critic")
class CriticTrainer(Trainer):
    """PPO with a centralised critic (settings: the `critic:` section and the shared
    policy-update keys). Works with `group_size: 1`."""

    needs_states = True  # the value model reads the global state at each decision point

    def __init__(self, ctx: TrainerContext):
        super().__init__(ctx)
        cfg, critic = ctx.config, ctx.config.critic
        teams = ctx.scenario.teams
        if critic.value_per == "team":
            self.streams = list(dict.fromkeys(teams[a] for a in ctx.scenario.agents))
            self.stream_of = {a: self.streams.index(teams[a]) for a in ctx.scenario.agents}
        else:
            self.streams = list(ctx.scenario.agents)
            self.stream_of = {a: i for i, a in enumerate(self.streams)}
        lora = LoraSettings.from_config(cfg.lora)
        device = ctx.accelerator.device
        if critic.model is None:
            peft_model, tokenizer = add_adapters(ctx.model, [VALUE_ADAPTER], lora), ctx.tokenizer
        else:  # a separate (small) model: its own tokenizer, its own base weights
            base, tokenizer = load_model(critic.model, dtype="float32")
            peft_model = attach_adapters(base, [VALUE_ADAPTER], lora).to(device)
        self.value = ValueModel(peft_model, tokenizer, len(self.streams), critic.max_state_tokens, ctx.accelerator.mixed_precision)
        self.value_optimizer = torch.optim.AdamW(self.value.trainable_parameters(), lr=critic.lr, weight_decay=cfg.weight_decay)
        self.targets = RunningNorm(len(self.streams))
        self.estimator = advantage_estimator(critic.advantage)
        self.updates = 0  # critic updates so far (the value warm-up counts them), kept in checkpoints

    # ----- one update ------------------------------------------------------------------
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        ctx, critic = self.ctx, self.ctx.config.critic
        t0 = time.perf_counter()
        turns = sorted(batch.samples, key=lambda s: s.key)
        answers = reference_answers(batch) if critic.privileged else None
        state_of, spans, texts = decision_points(turns, batch.states, answers)
        rewards = self.point_rewards(batch, turns, state_of, len(texts))
        groups = [batch.episodes[e].group for e in dict.fromkeys(s.episode for s in turns)]  # one per span
        advantages, metrics = self.learn_values(self.value.encode(texts), spans, groups, rewards)
        warming_up = self.updates < critic.value_warmup_steps
        self.updates += 1
        streams = torch.tensor([self.stream_of[s.agent] for s in turns], dtype=torch.long, device="cpu")
        points = torch.tensor(state_of, dtype=torch.long, device="cpu")
        own = advantages[points, streams] if turns else torch.zeros(0, device="cpu")  # (N,)
        metrics.update(self._advantage_metrics(turns, own))
        if critic.group_weight > 0:
            own = self._mix_group(batch, turns, own)
        # Judged by the values these advantages came from: the value model as the last update left it.
        whiten = whitens(metrics["value/explained_variance"], critic.normalize_advantages, critic.whiten_below_explained_variance)
        if whiten:
            own = self._whiten(turns, own)
        metrics.update({"critic/warmup": float(warming_up), "critic/whitened": float(whiten)})
        metrics["perf/value_seconds"] = time.perf_counter() - t0
        if warming_up:  # the values are still noise: no policy learns from them yet
            return {**metrics, **WARMUP_POLICY_METRICS}
        samples = [
            Sample(adapter=s.adapter, prompt_ids=s.prompt_ids, completion_ids=s.completion_ids,
                   advantage=float(a), temperature=s.temperature, logprobs=s.logprobs,
                   allowed_token_ids=s.allowed_token_ids)
            for s, a in zip(turns, own.tolist(), strict=True) if s.trainable
        ]
        metrics.update(policy_update(
            ctx.model, self.optimizer, samples, self.update_settings(), ctx.tokenizer.pad_token_id,
            backward=ctx.accelerator.backward, scheduler=self.scheduler, ranks=ctx.ranks,
        ))
        return metrics

    def point_rewards(self, batch: RolloutBatch, turns: list[TurnSample], state_of: list[int], points: int) -> torch.Tensor:
        """(P, S): the ledger's rewards at each decision point. A per-turn reward counts at the
        point of the turn that earned it (a scripted turn's: the last point before it); a
        final reward at the agent's last point, or the episode's last for an agent that
        never acted. A team stream takes its members' mean."""
        size: dict[int, int] = defaultdict(int)
        for a in self.ctx.scenario.agents:
            size[self.stream_of[a]] += 1
        point_of_turn: dict[tuple[int, int], int] = {}
        last_of_agent: dict[tuple[int, str], int] = {}
        rounds: dict[int, list[tuple[int, int]]] = defaultdict(list)  # episode -> (round, point), in order
        for s, point in zip(turns, state_of, strict=True):
            point_of_turn[(s.episode, s.turn)] = point
            last_of_agent[(s.episode, s.agent)] = point
            if not rounds[s.episode] or rounds[s.episode][-1][1] != point:
                rounds[s.episode].append((s.round, point))
        rewards = torch.zeros((points, len(self.streams)), device="cpu")
        for e, steps in rounds.items():
            episode = batch.episodes[e]
            for at, entry in episode.ledger():
                if entry.agent not in self.stream_of:
                    continue
                if at is None:
                    point = last_of_agent.get((e, entry.agent), steps[-1][1])
                elif (e, at) in point_of_turn:
                    point = point_of_turn[(e, at)]
                else:
                    earned = episode.turns[at].round
                    point = next((p for r, p in reversed(steps) if r <= earned), steps[0][1])
                stream = self.stream_of[entry.agent]
                rewards[point, stream] += entry.value / size[stream]
        return rewards

    def learn_values(
        self, rows: list[list[int]], spans: list[tuple[int, int]], groups: list[int], rewards: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Values of every decision point, the estimator's advantages and targets (GAE by
        default), and `critic.epochs` passes of the clipped value loss; returns the (P, S)
        advantages and the value metrics. `groups`: each episode's (span's) task group.

        The first pass's forward gives both the values before the update (for the estimator,
        detached) and the loss: chunks hold whole episodes, so no separate no-grad pass is
        needed, and the estimator is called on each chunk of whole episodes.
        Gradients are summed over ranks before each step."""
        ctx, critic = self.ctx, self.ctx.config.critic
        ranks = ctx.ranks
        points, streams = rewards.shape
        old = torch.zeros((points, streams), device="cpu")  # host-side bookkeeping, like GRPO's advantages
        advantages, returns = torch.zeros_like(old), torch.zeros_like(old)
        params = self.value.trainable_parameters()
        enable_training(self.value.peft_model, [VALUE_ADAPTER])
        (elements,) = ranks.sum([points * streams])
        point_episode = torch.zeros(points, dtype=torch.long, device="cpu")  # (P,): each point's episode
        point_group = torch.zeros(points, dtype=torch.long, device="cpu")  # (P,): its episode's task group
        for e, ((a, b), group) in enumerate(zip(spans, groups, strict=True)):
            point_episode[a:b], point_group[a:b] = e, group
        totals: dict[str, float] = defaultdict(float)
        for epoch in range(critic.epochs):
            self.value_optimizer.zero_grad(set_to_none=True)
            for start, end in _episode_chunks(spans, critic.micro_batch_size):
                predicted = self.value(rows[start:end]).float()  # (B, S), normalised units
                if epoch == 0:  # chunks hold whole episodes: the estimator sees each one whole
                    old[start:end] = self._denormalise(predicted.detach().cpu())
                    chunk = slice(start, end)
                    estimate = self.estimator(
                        Returns(rewards[chunk], point_episode[chunk], point_group[chunk], old[chunk]), critic
                    )
                    advantages[start:end], returns[start:end] = estimate.advantages, estimate.returns
                device = predicted.device
                loss, clipped = clipped_value_loss(
                    predicted, self._normalise(old[start:end]).to(device), self._normalise(returns[start:end]).to(device),
                    critic.value_clip,
                )
                total = loss.sum() / max(elements, 1)  # the mean over every rank's elements
                ctx.accelerator.backward(total)
                totals["loss"] += float(total.detach())
                totals["clipped"] += float(clipped.sum())
            ranks.sum_gradients(params)
            present = [p for p in params if p.grad is not None]
            if present:
                totals["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(present, ctx.config.max_grad_norm))
            self.value_optimizer.step()
        enable_training(ctx.model, ctx.policy_adapters)
        count, *sums = ranks.sum([points, *returns.sum(0).tolist(), *(returns**2).sum(0).tolist()])
        if critic.normalize_targets:  # after the batch: its own targets were set under the earlier statistics
            self.targets.update(count, sums[:streams], sums[streams:])
        pairs = ranks.gather(list(zip(old.reshape(-1).tolist(), returns.reshape(-1).tolist(), strict=True)))
        before = torch.tensor([o for o, _ in pairs], device="cpu")
        target = torch.tensor([r for _, r in pairs], device="cpu")
        loss, clipped = ranks.sum([totals["loss"], totals["clipped"]])
        return advantages, {
            "value/loss": loss / critic.epochs,
            "value/clip_fraction": clipped / max(elements * critic.epochs, 1),
            "value/explained_variance": explained_variance(before, target) if len(target) else float("nan"),
            "value/mean": float(before.mean()) if len(before) else float("nan"),
            "value/target_mean": float(target.mean()) if len(target) else float("nan"),
            "value/grad_norm": totals["grad_norm"] / critic.epochs,
        }

    # ----- advantage bookkeeping ---------------------------------------------------------
    def _moments(self, turns: list[TurnSample], own: torch.Tensor) -> dict[str, tuple[float, float, float]]:
        """Per agent, (count, mean, std) of `own` over every rank's turns."""
        agents = self.ctx.scenario.agents
        parts = []
        for agent in agents:
            mine = own[[i for i, s in enumerate(turns) if s.agent == agent]]
            parts += [len(mine), float(mine.sum()), float((mine**2).sum())]
        summed = self.ctx.ranks.sum(parts)
        out = {}
        for k, agent in enumerate(agents):
            n, total, squares = summed[3 * k : 3 * k + 3]
            mean = total / n if n else 0.0
            out[agent] = (n, mean, math.sqrt(max(squares / n - mean * mean, 0.0)) if n else 0.0)
        return out

    def _advantage_metrics(self, turns: list[TurnSample], own: torch.Tensor) -> dict[str, float]:
        """Per-agent mean and std of the raw GAE advantages, over every rank's turns."""
        out = {}
        for agent, (_, mean, std) in self._moments(turns, own).items():
            out[f"advantage/{agent}/mean"], out[f"advantage/{agent}/std"] = mean, std
        total, count = self.ctx.ranks.sum([float(own.abs().sum()), len(own)])
        out["advantage/abs_mean"] = total / count if count else 0.0
        return out

    def _whiten(self, turns: list[TurnSample], own: torch.Tensor) -> torch.Tensor:
        """Each agent's advantages over the whole batch (every rank) to mean 0, std 1."""
        out = own.clone()
        for agent, (n, mean, std) in self._moments(turns, own).items():
            if n >= 2:
                idx = [i for i, s in enumerate(turns) if s.agent == agent]
                out[idx] = (own[idx] - mean) / (std + 1e-6)
        return out

    def _mix_group(self, batch: RolloutBatch, turns: list[TurnSample], own: torch.Tensor) -> torch.Tensor:
        """(1 - w) * the critic's advantage + w * the group-relative one (both whitened)."""
        critic = self.ctx.config.critic
        source = "team" if critic.value_per == "team" else "agent"
        agents = self.ctx.scenario.agents
        group = group_estimate(episode_returns(batch, agents, source), None).advantages  # (E, streams), std-scaled
        stream = {a: 0 if source == "team" else k for k, a in enumerate(agents)}
        grouped = torch.tensor([float(group[s.episode, stream[s.agent]]) for s in turns], device="cpu")
        return (1 - critic.group_weight) * self._whiten(turns, own) + critic.group_weight * grouped

    def _normalise(self, values: torch.Tensor) -> torch.Tensor:
        if not self.ctx.config.critic.normalize_targets:
            return values
        return (values - torch.tensor(self.targets.mean, device="cpu")) / self.targets.std()

    def _denormalise(self, values: torch.Tensor) -> torch.Tensor:
        if not self.ctx.config.critic.normalize_targets:
            return values
        return values * self.targets.std() + torch.tensor(self.targets.mean, device="cpu")

    # ----- checkpoints ---------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """critic/: the value adapter, the head and the critic's optimizer (safetensors), and
        the streams, target statistics and update count (JSON)."""
        from multiagent_rl.adapters import save_adapters

        out = folder / "critic"
        save_adapters(self.value.peft_model, out / "adapter", [VALUE_ADAPTER])
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value.head.state_dict().items()}, out / "head.safetensors")
        tensors, state = optimizer_state(self.value_optimizer)
        save_file(tensors, out / "optimizer.safetensors")
        state.update({"streams": self.streams, "targets": self.targets.state(), "updates": self.updates})
        (out / "state.json").write_text(json.dumps(state, indent=1))

    def load(self, folder: Path) -> str | None:
        from multiagent_rl.adapters import load_adapter_weights

        src = folder / "critic"
        if not src.is_dir():  # a run switched to the critic (--allow-changes)
            return f"{folder.name} holds no critic (trained with another trainer): the critic starts fresh"
        state = json.loads((src / "state.json").read_text())
        if state["streams"] != self.streams:
            raise ValueError(f"{folder}'s critic has value streams {state['streams']}, this run {self.streams}")
        load_adapter_weights(self.value.peft_model, src / "adapter")
        head = load_file(src / "head.safetensors")
        self.value.head.load_state_dict({k: v.to(self.value.head.weight.device) for k, v in head.items()})
        load_optimizer_state(self.value_optimizer, load_file(src / "optimizer.safetensors"), state)
        self.targets.load(state["targets"])
        # A critic saved before the count was kept had learned once per step.
        self.updates = state["updates"] if "updates" in state else json.loads((folder / "trainer_state.json").read_text())["step"]


def _episode_chunks(spans: list[tuple[int, int]], size: int):
    """(start, end) over consecutive whole episodes, about `size` points each (an episode
    longer than `size` is a chunk of its own)."""
    i = 0
    while i < len(spans):
        j = i + 1
        while j < len(spans) and spans[j][1] - spans[i][0] <= size:
            j += 1
        yield spans[i][0], spans[j - 1][1]
        i = j
