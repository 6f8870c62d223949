"""The shared training loop: rollout -> trainer -> sync backend -> log -> checkpoint ->
held-out evaluation. The trainer (`config.trainer`, from the registry in
`trainers/base.py`) owns advantages, losses and optimizers; the loop knows none of them.

>>> run = Run(load_config(None, ["scenario=debate", "steps=20"]), "runs/debate")   # doctest: +SKIP
>>> run.train()                                                                   # doctest: +SKIP

Everything random in step N derives from (seed, N): task draws and sampling seeds.
So a run resumed from `checkpoints/step-K` replays steps K+1.. exactly as an
uninterrupted run would.

accelerate owns devices and processes. The model, optimizer and every batch live on
`accelerator.device`; with `accelerate launch --num_processes N` each rank plays its
shard of the step's task groups (the draw does not depend on N), gradients are summed
over ranks before each optimizer step (`trainers/distributed.py`), and only the main
process writes config, metrics and checkpoints; each rank writes its own episode log.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from multiagent_rl.branching import check_plan
from multiagent_rl.config import (
    ConfigError,
    TrainConfig,
    save_config,
)
from multiagent_rl.contain import UserCodeError, describe_failure
from multiagent_rl.models import load_tokenizer
from multiagent_rl.records import EpisodeLog, Task
from multiagent_rl.registry import load_scenario
from multiagent_rl.rollout import RolloutBatch, Sampling
from multiagent_rl.scenario import Scenario
from multiagent_rl.seeds import step_seed, task_rng
from multiagent_rl.team import SEATED_LEAGUES, Team

from .base import Trainer, TrainerContext, trainer_class
from .checkpoint import (
    load_checkpoint,
    prune_checkpoints,
    remove_temporary,
    resumable_checkpoint,
    save_checkpoint,
)
from .distributed import Ranks
from .durable import write_atomic
from .league_play import LeaguePlay, check_league, learner_stats
from .metrics import (
    RunBudget,
    StepRecord,
    eval_metrics,
    invalid_share,
    rollout_metrics,
    team_reward_stats,
)
from .rollout_ahead import check_sendable, make_rollouts
from .run_folder import RunLock, check_resumed_settings, restore_committed_state, strategy_path
from .runtime import check_batch_fits, make_accelerator, resolve_dtype
from .tree import check_tree_plan


class Run:
    """A training run in a folder: config.yaml, metrics.jsonl, episodes/, checkpoints/."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, scenario: Scenario | None = None,
                 allow_changes: bool = False, config_sources: dict[str, str] | None = None):
        """`allow_changes`: resume even if settings that shape the run's streams (seed, model,
        LoRA, group size, scenario, ...) differ from the run folder's config.yaml; the change
        is recorded in config-changes.jsonl with the step it took effect. `config_sources`:
        where each setting came from (`load_config(sources=...)`), written into config.yaml."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.allow_changes = allow_changes
        self.config_sources = config_sources
        self.accelerator = make_accelerator(config, self.run_dir)
        self.ranks = Ranks.from_accelerator(self.accelerator)
        given_scenario = scenario
        scenario = scenario or load_scenario(config.scenario, **config.scenario_options)
        trainer = trainer_class(config.trainer)  # an unknown name fails before any model work is wasted
        check_league(config.league.mode, scenario)
        check_plan(config.rollout.branching, scenario)
        check_tree_plan(config, scenario)
        if config.rollout.max_staleness:
            check_sendable(given_scenario)  # the rollout worker process builds the same scenario
        # Before any weights load or an engine starts: a generate batch too big for this machine.
        check_batch_fits(config, scenario, len(load_tokenizer(config.model)), self.ranks.count)
        torch.manual_seed(config.seed)  # the same LoRA init on every rank
        self.dtype = resolve_dtype(config.dtype, self.accelerator.device)
        # Placed with accelerator.device, not prepare(): DDP's wrapper would sync every
        # backward, but each micro-batch here trains one adapter of a multi-adapter peft
        # model (set_adapter), so ranks sum gradients themselves before each optimizer step.
        self.team = Team.build(
            config, scenario, device=self.accelerator.device, dtype=self.dtype,
            mixed_precision=self.accelerator.mixed_precision, live_dir=self.run_dir / "live_adapters",
            processes=self.ranks.count,
        )
        if config.gradient_checkpointing:  # training forwards only; generation runs in eval mode
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.trainer: Trainer = trainer(TrainerContext(
            config=config, model=self.model, tokenizer=self.tokenizer, scenario=scenario,
            accelerator=self.accelerator, ranks=self.ranks, agent_adapters=self.agent_adapters,
            policy_adapters=self.team.policy_adapters,
        ))
        self.league = LeaguePlay(self.team, self.ranks, config.seed) if config.league.mode in SEATED_LEAGUES else None
        self.shaping_from: int | None = None  # the step the shaping terms began to anneal
        self.step = 0
        self.generated_tokens = 0  # the run's so far, every rank's (what token_budget counts); checkpointed
        self.damaged_checkpoints = 0
        self.before: dict[str, float] | None = None  # the held-out result at step 0
        self.resume_notes: list[str] = []  # what the resume could not carry over, said once
        self.given_scenario = given_scenario  # a rollout worker builds the same one (None: from the registry)
        self.rollouts = make_rollouts(self, config.rollout.max_staleness)

    # The team's parts, by the names the trainer and the tests use.
    scenario = property(lambda self: self.team.scenario)
    model = property(lambda self: self.team.model)
    tokenizer = property(lambda self: self.team.tokenizer)
    backend = property(lambda self: self.team.backend)
    agent_adapters = property(lambda self: self.team.agent_adapters)
    device = property(lambda self: self.accelerator.device)
    optimizer = property(lambda self: self.trainer.optimizer)
    scheduler = property(lambda self: self.trainer.scheduler)

    @property
    def sampling(self) -> Sampling:
        cfg = self.config
        return Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)

    @property
    def runtime(self) -> dict[str, Any]:
        """What the run really trains on, as recorded in every metrics line."""
        return {
            "runtime/device": str(self.device),
            "runtime/processes": self.ranks.count,
            "runtime/mixed_precision": self.accelerator.mixed_precision,
            "runtime/dtype": self.dtype,
        }

    # ----- the loop -----------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        lock = RunLock(self.run_dir, "train").acquire() if self.ranks.is_main else None
        try:
            return self._train()
        finally:
            self.rollouts.close()  # a rollout worker's in-flight steps are dropped: none was logged
            if lock is not None:
                lock.release()

    def _train(self) -> dict[str, Any]:
        cfg = self.config
        self.ranks.barrier()  # the main process holds the folder's lock before any rank reads it
        found, damaged = resumable_checkpoint(self.run_dir)  # checksums read once, for both uses
        changes = check_resumed_settings(self.run_dir, self.config, self.allow_changes) if found and self.ranks.is_main else {}
        resumed = self._resume(found, damaged)
        if self.ranks.is_main:
            if changes or self.resume_notes:  # recorded once the resume has taken them on
                line = {"step": resumed + 1, "changes": changes, **({"notes": self.resume_notes} if self.resume_notes else {})}
                with open(self.run_dir / "config-changes.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line, default=str) + "\n")
            save_config(cfg, self.run_dir / "config.yaml", self.config_sources)
        if self._trackers:
            self.accelerator.init_trackers("tracker", config={"scenario": cfg.scenario, "lr": cfg.lr})
        summary: dict[str, Any] = {"resumed_from": resumed}
        if resumed is None:
            if self.league is not None:
                self.league.start()
            self.before = self.evaluate(step=0)
            self._log({"step": 0, **eval_metrics(self.before)})
        summary["before"] = self.before
        budget = RunBudget(cfg.time_budget_minutes, cfg.token_budget)
        self.rollouts.start(version=self.step, first_step=self.step + 1, last_step=cfg.steps)
        skipped = 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {self.scenario.name}", unit="step",
                   disable=not (cfg.progress and self.ranks.is_main))
        stop = budget.spent(self.generated_tokens)  # a resumed run whose token budget is spent trains no more
        while self.step < cfg.steps and stop is None:
            self.step += 1
            record = self.train_step(self.step)
            record.damaged_checkpoints, self.damaged_checkpoints = self.damaged_checkpoints, 0  # said once
            skipped += int(record.update["update/skipped"])
            stop = budget.spend(record.step_seconds, self.generated_tokens)
            last = self.step == cfg.steps or stop is not None
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                record.held_out = summary["after"] = self.evaluate(step=self.step)
            bar.update(1)
            bar.set_postfix(self._progress(record, summary.get("after") or summary.get("before"), skipped), refresh=False)
            self._log(record.metrics())
            if self.step % cfg.save_every == 0 or last:
                if self.ranks.is_main:
                    save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, self.scheduler,
                                    {"scenario": self.scenario.name, "trainer": cfg.trainer, "before": self.before,
                                     "shaping_from": self.shaping_from, "generated_tokens_total": self.generated_tokens,
                                     **({"league": self.league.state_dict()} if self.league else {})},
                                    config=cfg.model_dump(mode="json"), adapters=[*self.team.policy_adapters, *self.team.frozen],
                                    write_more=self.trainer.save)
                    prune_checkpoints(self.run_dir, cfg.keep_checkpoints)
                self.ranks.barrier()
        if stop is not None:
            summary["stopped"] = f"{stop} after {self.step} steps"
        bar.close()
        if self._trackers:
            self.accelerator.end_training()
        summary["steps"] = self.step
        summary["train_seconds"] = budget.seconds
        return summary

    @staticmethod
    def _progress(record: StepRecord, held_out: dict[str, float] | None, skipped: int) -> dict[str, str]:
        shown = {"reward": f"{record.rollout['reward/team_mean']:.3f}"}
        if held_out:
            shown["held-out"] = f"{held_out['mean']:.3f}"
        shown["skipped"] = str(skipped)
        return shown

    def tasks_for_step(self, step: int) -> list[Task]:
        """Step `step`'s tasks, drawn from (seed, step) alone: the same on every rank."""
        rng = task_rng(self.config.seed, step)
        try:
            return [self.scenario.sample_task(rng, "train") for _ in range(self.config.tasks_per_step)]
        except Exception as exc:  # no task, no episode to mark failed: stop, naming file and line
            raise UserCodeError(describe_failure(exc, f"step {step}: the task generator of {self.scenario.name!r}")) from exc

    def episode_log(self, name: str, folder: Path | None = None) -> EpisodeLog:
        """This rank's log `<folder>/<name>.msgpack` (`<name>.rank<R>` with several processes:
        never two writers on one file); `folder` defaults to the run's `episodes/`."""
        suffix = f".rank{self.ranks.index}" if self.ranks.distributed else ""
        return EpisodeLog((folder or self.run_dir / "episodes") / f"{name}{suffix}.msgpack")

    def shard(self, tasks: list[Task]) -> dict[str, Any]:
        """This rank's share of `tasks` as the team's `play` options: its tasks, the global
        index of the first (group ids and episode seeds do not depend on the sharding), and
        a progress bar on the main process."""
        return {"tasks": self.ranks.shard(tasks), "first_group": self.ranks.shard_start(len(tasks)),
                "progress": self.config.progress and self.ranks.is_main}

    def play_options(self, step: int, tasks: list[Task] | None = None, progress: bool | None = None) -> dict[str, Any]:
        """How this rank plays step `step` (the team's `play` options): its shard of the step's
        tasks (drawn here unless given), the sampling seed from (seed, step, rank), and the
        run's sampling settings."""
        cfg = self.config
        shard = self.shard(tasks if tasks is not None else self.tasks_for_step(step))
        if progress is not None:
            shard["progress"] = progress
        return {**shard, "seed": step_seed(cfg.seed, step, self.ranks.index), "step": step, "group_size": cfg.group_size,
                "sampling": self.sampling, "record_states": self.trainer.needs_states, "branching": cfg.rollout.branching,
                "move_forks": cfg.rollout.move_forks}

    def train_step(self, step: int) -> StepRecord:
        """One training step, in run order:

        1. draw the step's tasks from (seed, step); seed this rank's sampling stream;
        2. play this rank's shard of them, `group_size` episodes each (in a league, each group
           seated as the league planned: the learner against a frozen snapshot), and log them;
           with `rollout.max_staleness` >= 1, take them from the rollout worker that played
           them while the last update ran (`rollout_ahead.py`); record a league's games;
        3. stop on failed user code past the allowed share; hand the trainer the rest, its
           shaping terms weighted by the schedule (`shaping:`);
        4. update the live adapters (the trainer: advantages, losses, optimizer);
        5. sync the backend to the new adapters; a league's match and snapshot when due; then
           hand a rollout worker the committed policy and pool;
        6. return the step's record (rollout, update, league and timing figures, over all ranks).
        """
        cfg = self.config
        t0 = time.perf_counter()
        # steps 1-2
        torch.manual_seed(step_seed(cfg.seed, step, self.ranks.index))
        if self.league is not None:
            self.league.reset_step()  # the step's tallies: its own games and its match's
        played = self.rollouts.take(step)
        batch = played.batch
        if played.plan:  # against the plan made when the step was asked for
            self.league.record(batch, played.plan)
        # step 3
        failed = self.check_failures(batch, step)
        t1 = time.perf_counter()
        shaping = cfg.shaping.weight(step, self.shaping_from)
        learned = batch.without_failed_groups().reweighted(dict.fromkeys(cfg.shaping.terms, shaping) if shaping < 1 else {})
        # step 4
        update = self.trainer.update(learned)
        t2 = time.perf_counter()
        # step 5
        self.team.sync(step)
        match_tokens = 0
        if self.league is not None:
            match_tokens = self.league.after_update(step, self.sampling, log=self.episode_log(f"league-step-{step:06d}"))
        # After the snapshot: a rollout worker gets the policy with the pool it was committed
        # with, and the next step to play (its league plan made now).
        self.rollouts.updated(step)
        # step 6
        rollout_s, update_s, step_s = self.ranks.max([t1 - t0, t2 - t1, time.perf_counter() - t0])
        stats = {**rollout_metrics(batch, self.ranks), "shaping/weight": shaping}
        stats["rollout/staleness"] = step - 1 - played.version  # the updates the sampler was behind
        (stats["perf/rollout_play_seconds"],) = self.ranks.max([played.seconds])
        if self.league is not None:  # a match's games are training compute, not evaluation
            stats["rollout/match_generated_tokens"] = match_tokens
        self.generated_tokens += stats["rollout/generated_tokens"] + match_tokens
        stats["rollout/generated_tokens_total"] = self.generated_tokens
        threshold = cfg.shaping.stop_when_invalid_below
        if self.shaping_from is None and threshold is not None and invalid_share(self.scenario, stats) < threshold:
            self.shaping_from = step + 1  # invalid replies are rare: shaping anneals from the next step
        return StepRecord(
            step=step, rollout=stats, update=update, failed_fraction=failed,
            lr=self.scheduler.get_last_lr()[0], rollout_seconds=rollout_s, update_seconds=update_s, step_seconds=step_s,
            league=self.league.metrics() if self.league else {},
        )

    def check_failures(self, batch: RolloutBatch, step: int) -> float:
        """The share of this step's episodes (all ranks) whose reward failed; stops the run,
        naming the first failure, under `fail_fast` or past `max_failed_fraction`. The failed
        episodes are already in the log, failure included."""
        cfg = self.config
        first = next((ep.failure for ep in batch.episodes if ep.failure), None)
        failed, total = self.ranks.sum([sum(ep.failure is not None for ep in batch.episodes), len(batch.episodes)])
        failures = self.ranks.gather([first] if first else [])
        fraction = failed / max(total, 1)
        if failed and (cfg.fail_fast or fraction > cfg.max_failed_fraction):
            rule = "fail_fast is on" if cfg.fail_fast else f"more than max_failed_fraction={cfg.max_failed_fraction:g}"
            raise UserCodeError(f"step {step}: {int(failed)} of {int(total)} episodes failed ({rule}); first: {failures[0]}")
        return fraction

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy held-out team reward (mean, standard error) of the trained adapters, logged
        in the run's episodes/ as part of training. In a league: the learner against the base
        model, seats alternating, scored from outcomes alone (`learner_stats`); for an OpenSpiel
        game, the learner's exploitability too (`eval/exploitability`), and its strategy table
        (information state -> move -> probability) in `strategy/step-NNNNNN.json`."""
        tasks = self.scenario.heldout_tasks(self.config.eval_episodes, seed=self.config.seed)
        shard = self.shard(tasks)
        log = self.episode_log(f"eval-step-{step:06d}")
        if self.league is None:
            return team_reward_stats(self.team.evaluate(**shard, log=log, step=step).episodes, self.ranks)
        plan = self.league.against(len(tasks), "base")
        seatings = self.league.seatings(plan)
        start = shard["first_group"]
        batch = self.team.evaluate(**shard, adapters=seatings[start:start + len(shard["tasks"])], log=log, step=step)
        stats = learner_stats(batch.episodes, plan, self.league.team_of, self.ranks, self.config.shaping.terms)
        if self.scenario.openspiel_game is not None:  # exact and cheap for small games (Kuhn poker: 12 states)
            from multiagent_rl.games.exploitability import team_exploitability

            def exploitability() -> float:  # runs on the main process alone, so it writes alone
                found = team_exploitability(self.team, game_name=self.scenario.openspiel_game,
                                            temperature=self.sampling.temperature)
                table = {"step": step, "exploitability": found["exploitability"], "policy": found["policy"]}
                write_atomic(strategy_path(self.run_dir, step), json.dumps(table, indent=1, sort_keys=True) + "\n")
                return found["exploitability"]

            # Every rank holds the same adapters, so every rank would compute the same figure.
            stats["exploitability"] = self.ranks.from_main(exploitability)
        return stats

    # ----- persistence ------------------------------------------------------------------
    def _resume(self, found: tuple[int, Path] | None, damaged: list[tuple[Path, str]]) -> int | None:
        """Load the newest checkpoint, if any, and bring the folder back to its step: records
        of later steps (which will be replayed identically) are moved to quarantine/."""
        if found is not None:
            step, path = found
            try:
                if self.league is not None:  # the pool's frozen adapters exist before their weights load
                    self.team.add_frozen(LeaguePlay.saved_pool(path))
                state = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
                fresh = self.trainer.load(path)
            except (RuntimeError, KeyError, ValueError) as exc:  # verified whole, so it is another model's
                message = " ".join(str(exc).split())[:200]
                raise ConfigError(
                    f"{path} does not fit this run's model ({type(exc).__name__}: {message}); "
                    "was it trained with another model, LoRA rank or adapters?"
                ) from exc
            self.step = step
            self.before = state.get("before")  # absent in checkpoints written before it was kept
            self.shaping_from = state.get("shaping_from")
            # A checkpoint from before the count was kept counts again from 0: its metrics.jsonl
            # has no per-step count to sum either.
            self.generated_tokens = state.get("generated_tokens_total", 0)
            if fresh and self.ranks.is_main:
                print(f"multiagent-rl: {self.run_dir}: {fresh}", file=sys.stderr)
                self.resume_notes.append(fresh)
            self.team.sync(step)  # generation continues from the loaded adapters
            self.team.serve_frozen(self.team.frozen)
            started = self.league.load(state, path, step) if self.league is not None else None
            if started and self.ranks.is_main:
                print(f"multiagent-rl: {self.run_dir}: {started}", file=sys.stderr)
                self.resume_notes.append(started)
        self.damaged_checkpoints = len(damaged)
        self.ranks.barrier()  # every rank has read the folder before the main one tidies it
        if self.ranks.is_main:
            remove_temporary(self.run_dir)
            self.team.remove_stale_live_adapters()  # an earlier start's; this one deletes its own as it goes
            for line in restore_committed_state(self.run_dir, found[0] if found else None, damaged):
                print(f"multiagent-rl: {self.run_dir}: {line}", file=sys.stderr)
        self.ranks.barrier()
        return found[0] if found else None

    @property
    def _trackers(self) -> bool:
        return bool(self.accelerator.log_with)

    def _log(self, metrics: dict[str, Any]) -> None:
        """One metrics line (main process only: every rank holds the same reduced metrics)."""
        if not self.ranks.is_main:
            return
        line = json.dumps({**metrics, **self.runtime}, default=float)
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # a committed step's line survives a power cut too
        if self._trackers:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step" and math.isfinite(v)}
            self.accelerator.log(scalars, step=int(metrics["step"]))
