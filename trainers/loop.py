"""The shared training loop: rollout -> advantages -> update adapters -> sync backend
-> log -> checkpoint -> held-out evaluation.

>>> run = Run(load_config(None, ["scenario=debate", "steps=20"]), "runs/debate")   # doctest: +SKIP
>>> run.train()                                                                   # doctest: +SKIP

Everything random in step N derives from (seed, N): task draws and sampling seeds.
So a run resumed from `checkpoints/step-K` replays steps K+1.. exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from multiagent_rl.adapters import (
    LoraSettings,
    adapter_map,
    adapter_names,
    attach_adapters,
    save_adapters,
)
from multiagent_rl.answers import answers_match
from multiagent_rl.config import TrainConfig, save_config
from multiagent_rl.models import load_model, resolve_model_path
from multiagent_rl.records import Episode, EpisodeLog
from multiagent_rl.rollout import RolloutBatch, Sampling, rollout
from multiagent_rl.scenario import Scenario, load_scenario

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .grpo import Sample, UpdateSettings, discounted_credit, group_advantages, grpo_update


def team_reward_stats(episodes: list[Episode]) -> dict[str, float]:
    """Mean and standard error of the team reward (mean over agents) across episodes, and
    the team's accuracy: the share of tasks with a reference answer that the team got right
    (unaffected by reward shaping; NaN when no task has one)."""
    values = [ep.team_reward() for ep in episodes]
    graded = [answers_match(ep.team_answer, ep.task.answer) for ep in episodes if ep.task.answer is not None]
    accuracy = statistics.fmean(graded) if graded else float("nan")
    if not values:
        return {"mean": float("nan"), "se": float("nan"), "n": 0, "accuracy": accuracy}
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "se": se, "n": len(values), "accuracy": accuracy}


EVAL_NAMES = {
    "mean": "eval/team_reward_mean",
    "se": "eval/team_reward_se",
    "n": "eval/team_reward_n",
    "accuracy": "eval/team_accuracy",
}


def eval_metrics(result: dict[str, float]) -> dict[str, float]:
    """Held-out stats under their metrics.jsonl names."""
    return {EVAL_NAMES[k]: v for k, v in result.items()}


class Run:
    """A training run in a folder: config.yaml, metrics.jsonl, episodes/, checkpoints/."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, scenario: Scenario | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.scenario = scenario or load_scenario(config.scenario, **config.scenario_options)
        torch.manual_seed(config.seed)
        self.model_base, self.tokenizer = load_model(config.model, dtype=config.dtype)
        self.agent_adapters = adapter_map(self.scenario, config.adapters)
        lora = LoraSettings(config.lora.rank, config.lora.alpha, config.lora.dropout, list(config.lora.target_modules))
        self.model = attach_adapters(self.model_base, adapter_names(self.agent_adapters), lora)
        self.backend = self._make_backend()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0
        )
        self.accelerator = None
        self.step = 0

    # ----- wiring -------------------------------------------------------------------
    def _make_backend(self):
        if self.config.backend == "hf":
            from multiagent_rl.backends.hf import HFBackend

            return HFBackend(
                self.model, self.tokenizer, max_batch_size=self.config.max_batch_size, mixed_precision=self.config.mixed_precision
            )
        from multiagent_rl.backends.vllm import VLLMBackend

        live = self._publish_adapters(0)
        return VLLMBackend(
            resolve_model_path(self.config.model),
            adapter_dirs={p.name: str(p) for p in live.iterdir()},
            max_lora_rank=self.config.lora.rank,
            max_loras=max(4, len(self.model.peft_config)),
            seed=self.config.seed,
        )

    def _publish_adapters(self, step: int) -> Path:
        """Save the current adapters where an out-of-process engine (vLLM) can load them."""
        live = self.run_dir / "live_adapters" / f"step-{step}"
        save_adapters(self.model, live)
        return live

    def _start_accelerator(self):
        from accelerate import Accelerator

        trackers = [t for t in self.config.log_with if t]
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=trackers or None, project_dir=str(self.run_dir))
        if trackers:
            self.accelerator.init_trackers("tracker", config={"scenario": self.config.scenario, "lr": self.config.lr})

    # ----- the loop -----------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self._resume()
        save_config(cfg, self.run_dir / "config.yaml")
        self._start_accelerator()
        summary: dict[str, Any] = {"resumed_from": resumed}
        if resumed is not None:
            summary["before"] = self._logged_eval(0)
        else:
            summary["before"] = self.evaluate(step=0)
            self._log({"step": 0, **eval_metrics(summary["before"])})
        budget = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
        spent = 0.0
        while self.step < cfg.steps:
            self.step += 1
            metrics = self.train_step(self.step)
            spent += metrics["perf/step_seconds"]
            out_of_time = budget is not None and spent >= budget
            last = self.step == cfg.steps or out_of_time
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                result = self.evaluate(step=self.step)
                metrics.update(eval_metrics(result))
                summary["after"] = result
            self._log(metrics)
            if self.step % cfg.save_every == 0 or last:
                save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self.scheduler, {"scenario": self.scenario.name})
            if out_of_time:
                summary["stopped"] = f"time budget of {cfg.time_budget_minutes} min used after {self.step} steps"
                break
        if self.accelerator is not None and self.config.log_with:
            self.accelerator.end_training()
        summary["steps"] = self.step
        summary["train_seconds"] = spent
        return summary

    def tasks_for_step(self, step: int):
        rng = random.Random(self.config.seed * 1_000_003 + step)
        return [self.scenario.sample_task(rng, "train") for _ in range(self.config.tasks_per_step)]

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        log = EpisodeLog(self.run_dir / "episodes" / f"step-{step:06d}.msgpack")
        batch = rollout(
            self.scenario,
            self.backend,
            self.tasks_for_step(step),
            group_size=cfg.group_size,
            adapters=self.agent_adapters,
            sampling=Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens),
            seed=cfg.seed * 1_000_003 + step,
            step=step,
            log=log,
            progress=cfg.progress,
        )
        t1 = time.perf_counter()
        samples, adv_metrics = self.make_samples(batch)
        settings = UpdateSettings(
            epochs=cfg.epochs,
            minibatches=cfg.minibatches,
            micro_batch_size=cfg.micro_batch_size,
            clip_eps=cfg.clip_eps,
            clip_eps_high=cfg.clip_eps_high,
            beta=cfg.beta,
            loss_aggregation=cfg.loss_aggregation,
            max_grad_norm=cfg.max_grad_norm,
            mixed_precision=cfg.mixed_precision,
        )
        update = grpo_update(
            self.model, self.optimizer, samples, settings, self.tokenizer.pad_token_id,
            backward=self.accelerator.backward if self.accelerator else None, scheduler=self.scheduler,
        )
        t2 = time.perf_counter()
        if self.config.backend != "hf":
            self.backend.sync_adapters(str(self._publish_adapters(step)))
        metrics = {"step": step, **rollout_metrics(batch), **adv_metrics, **update}
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["perf/rollout_seconds"] = t1 - t0
        metrics["perf/update_seconds"] = t2 - t1
        metrics["perf/step_seconds"] = time.perf_counter() - t0
        return metrics

    def make_samples(self, batch: RolloutBatch) -> tuple[list[Sample], dict[str, float]]:
        """Per-agent group-relative advantages; every turn of an agent gets its episode's advantage
        (or a discounted share with credit='discounted')."""
        cfg = self.config
        agents = self.scenario.agents
        groups = torch.tensor([ep.group for ep in batch.episodes])
        advantages: dict[str, torch.Tensor] = {}
        equal = singleton = total = 0
        for agent in agents:
            if cfg.reward_source == "team":
                rewards = torch.tensor([ep.team_reward() for ep in batch.episodes])
            else:
                rewards = torch.tensor([ep.rewards[agent] for ep in batch.episodes])
            adv, stats = group_advantages(rewards, groups, scale_by_std=cfg.scale_rewards)
            advantages[agent] = adv
            equal += stats.equal_reward_groups
            singleton += stats.singleton_groups
            total += stats.groups
        last_round = self.scenario.num_rounds - 1
        samples = []
        for s in batch.samples:
            a = float(advantages[s.agent][s.episode])
            if cfg.credit == "discounted":
                a = discounted_credit(a, s.round, last_round, cfg.gamma)
            samples.append(
                Sample(adapter=s.adapter, prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, advantage=a, temperature=s.temperature)
            )
        metrics = {
            "groups/equal_reward_fraction": equal / max(total, 1),
            "groups/singleton_fraction": singleton / max(total, 1),
            "advantage/abs_mean": statistics.fmean(abs(x.advantage) for x in samples) if samples else 0.0,
        }
        return samples, metrics

    def evaluate(self, step: int, episodes: int | None = None, adapters: dict | None = None, tag: str = "eval") -> dict[str, float]:
        """Greedy held-out team reward (mean, standard error); `adapters` None -> the trained ones."""
        n = episodes or self.config.eval_episodes
        tasks = self.scenario.heldout_tasks(n, seed=self.config.seed)
        batch = rollout(
            self.scenario,
            self.backend,
            tasks,
            group_size=1,
            adapters=adapters if adapters is not None else self.agent_adapters,
            sampling=Sampling(greedy=True, max_new_tokens=self.config.max_new_tokens),
            seed=self.config.seed,
            split="eval",
            step=step,
            log=EpisodeLog(self.run_dir / "episodes" / f"{tag}-step-{step:06d}.msgpack"),
            progress=self.config.progress,
        )
        return team_reward_stats(batch.episodes)

    # ----- persistence ------------------------------------------------------------------
    def _resume(self) -> int | None:
        found = latest_checkpoint(self.run_dir)
        if found is None:
            return None
        step, path = found
        load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.step = step
        self._drop_after(step)
        return step

    def _drop_after(self, step: int) -> None:
        """Forget records of steps after the checkpoint: they will be replayed identically."""
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.is_file():
            kept = []
            for line in metrics.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
            tmp = metrics.with_suffix(".tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            tmp.replace(metrics)
        for log in (self.run_dir / "episodes").glob("*step-*.msgpack"):
            if int(log.stem.rsplit("-", 1)[1]) > step:
                log.unlink()

    def _logged_eval(self, step: int) -> dict[str, float] | None:
        """The held-out result logged at `step`, if any (for resumed runs' before/after)."""
        path = self.run_dir / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step") == step and "eval/team_reward_mean" in record:
                return {k: record.get(name, float("nan")) for k, name in EVAL_NAMES.items()}
        return None

    def _log(self, metrics: dict[str, Any]) -> None:
        line = json.dumps(metrics, default=float)
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(line + "\n")
            handle.flush()
        if self.accelerator is not None and self.config.log_with:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step" and math.isfinite(v)}
            self.accelerator.log(scalars, step=int(metrics["step"]))


def rollout_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Rewards per team and agent, and completion health (empty, truncated, length)."""
    episodes = batch.episodes
    out: dict[str, float] = {}
    team = [ep.team_reward() for ep in episodes]
    out["reward/team_mean"] = statistics.fmean(team)
    out["reward/team_std"] = statistics.pstdev(team)
    per_agent: dict[str, list[float]] = defaultdict(list)
    for ep in episodes:
        for agent, r in ep.rewards.items():
            per_agent[agent].append(r)
    for agent, values in per_agent.items():
        out[f"reward/{agent}_mean"] = statistics.fmean(values)
        out[f"reward/{agent}_std"] = statistics.pstdev(values)
    texts = [t.message.text for ep in episodes for t in ep.turns]
    samples = batch.samples
    out["completions/empty_fraction"] = sum(1 for t in texts if not t.strip()) / max(len(texts), 1)
    out["completions/truncated_fraction"] = sum(1 for s in samples if s.finish_reason == "length") / max(len(samples), 1)
    out["completions/mean_tokens"] = statistics.fmean(len(s.completion_ids) for s in samples) if samples else 0.0
    answered = [t.message.answer is not None for ep in episodes for t in ep.turns]
    out["completions/answer_fraction"] = sum(answered) / max(len(answered), 1)
    out["perf/tokens_per_s"] = batch.generated_tokens / max(batch.generate_seconds, 1e-9)
    out["perf/backend_calls"] = batch.backend_calls
    return out
