"""Where a training step's episodes come from: played in place when the step starts
(`rollout.max_staleness: 0`, the synchronous loop), or by a rollout worker process that
plays step t+1 while the trainer updates on step t (k >= 1). Both play what `plan_step`
asks for, a league's seatings included: the loop has one way to get a step's episodes.

The worker holds its own copy of the model (base weights and LoRA adapters, built from
the run's config as the trainer's was) and generates with the HF backend; with a shared
vLLM server (`rollout.server`) it holds no model and plays through the server. After each
update the trainer sends it the new policy, tagged with its version (the update count): the
adapter weights, or the names the trainer loaded them under on the server; then, in a
league, the snapshots that version's commit froze or dropped (`pool_changes`). Requests,
policies and pool changes reach the worker in one ordered queue, so step s is always played
with version max(start, s - 1 - k) and the pool that version was committed with, whatever
the timing: the run is deterministic.

>>> source = RolloutWorker(run, staleness=1)    # doctest: +SKIP
>>> source.start(version=0, first_step=1, last_step=20)
>>> batch = source.take(1)                      # played with version 0
>>> source.updated(1)                           # policy v1 sent; step 3 requested

Resume: a checkpoint holds the committed adapters only, so the rollouts that were in
flight when the run stopped are dropped; the resumed run plays them again from the
checkpoint's adapters (step R+1..R+k at version R) and its league (pool and RNG as saved,
the RNG already past the dropped steps' plans, so their new plans are drawn afresh). A
resumed run is deterministic, and differs from an uninterrupted one in those k steps'
policy versions and seatings.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from multiagent_rl.rollout import RolloutBatch


@dataclass
class Played:
    """A step's episodes and how they were made."""

    batch: RolloutBatch
    version: int  # the update count of the adapters that played them
    seconds: float  # the rollout's own time (the worker's, when one plays ahead)
    plan: list[tuple[str, str]] = field(default_factory=list)  # a league's (learner side, opponent) per group


def plan_step(run, step: int, progress: bool | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """How this rank plays training step `step` (the team's `play` options, a league's
    seatings of this rank's task groups included) and the league's plan for the step:
    (learner side, opponent) per task group, [] without one that seats snapshots. The
    trainer records the step's games against this plan when it takes them.

    Made when the step is asked for: at k = 0 as the step starts, at k >= 1 when the worker
    is asked for it, right after update max(R, step - 1 - k) and its league snapshot. So a
    played-ahead step sees the league as that update left it, k updates behind like its
    policy: the pool, PFSP's win estimates, the league's RNG. Steps are asked for one at a
    time, in step order, by the trainer alone, so the RNG draws the same plans in the same
    order on every run and every rank, whatever the worker's timing: deterministic."""
    tasks = run.tasks_for_step(step)
    options = run.play_options(step, tasks, progress)
    if run.league is None:
        return options, []
    seatings, plan = run.league.plan(step, len(tasks))
    if seatings is not None:  # this rank's groups' seatings (mirror: None, the learner everywhere)
        first = options["first_group"]
        options["adapters"] = seatings[first:first + len(options["tasks"])]
    return options, plan


class InlineRollouts:
    """k = 0: each step is played in place with the adapters just updated."""

    def __init__(self, run):
        self.run = run

    def start(self, version: int, first_step: int, last_step: int) -> None:
        pass

    def take(self, step: int) -> Played:
        start = time.perf_counter()
        options, plan = plan_step(self.run, step)
        log = self.run.episode_log(f"step-{step:06d}")
        batch = self.run.team.play(**options, log=log, policy_version=step - 1)
        return Played(batch, step - 1, time.perf_counter() - start, plan)

    def updated(self, version: int) -> None:
        pass

    def close(self) -> None:
        pass


class RolloutWorkerError(RuntimeError):
    """The rollout worker process failed or exited; the message says how."""


class RolloutWorker:
    """k >= 1: a worker process plays up to k + 1 steps ahead of the update."""

    def __init__(self, run, staleness: int, poll_seconds: float = 1.0):
        self.run = run
        self.staleness = staleness
        self.poll_seconds = poll_seconds
        self.last_step = 0
        self.requested = 0  # the last step asked of the worker
        self.plans: dict[int, list[tuple[str, str]]] = {}  # a league's plan of each step asked for, till taken
        self.held: list[str] = []  # the frozen adapters (league snapshots) the worker holds
        self.process = None
        self.trainer_threads: int | None = None  # the trainer's torch threads before the worker took its share
        # Two queues, not one pipe: a put never blocks (a feeder thread writes), so the trainer
        # sending weights and the worker sending a batch cannot wait on each other.
        self.inbox = self.outbox = None

    def start(self, version: int, first_step: int, last_step: int) -> None:
        """Start the worker on the adapters of `version` and ask for steps first_step ..
        first_step + k: each is played with `version` (the in-flight ones of a resumed run
        are played again from the checkpoint's adapters)."""
        run = self.run
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pools mid-use
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.trainer_threads = torch.get_num_threads()
        trainer_share, worker_share = thread_shares(self.trainer_threads, self.staleness, holds_model=not run.config.rollout.server)
        torch.set_num_threads(trainer_share)
        spec = WorkerSpec(
            config=run.config.model_dump(mode="json"), scenario=run.given_scenario, threads=worker_share,
            device=str(run.device), dtype=run.dtype, mixed_precision=run.accelerator.mixed_precision,
        )
        self.process = context.Process(target=worker_main, args=(self.inbox, self.outbox, spec), name="rollout-worker",
                                       daemon=True)
        self.process.start()
        self.last_step = last_step
        self.held, self.plans = [], {}
        self._send_policy(version)
        self.requested = first_step - 1
        for _ in range(self.staleness + 1):
            self._request_next()

    def _send_policy(self, version: int) -> None:
        """The trainer's policy `version`, then the snapshots its commit froze or dropped, both
        tagged with it: the worker applies them in queue order, before any step asked for later."""
        self.inbox.put(("policy", version, policy_state(self.run)))
        changes = pool_changes(self.run, self.held)
        if changes is not None:
            self.inbox.put(("pool", version, changes))
            self.held = list(self.run.team.frozen)

    def _request_next(self) -> None:
        if self.requested < self.last_step:
            self.requested += 1
            options, self.plans[self.requested] = plan_step(self.run, self.requested, progress=False)
            self.inbox.put(("play", self.requested, options))

    def updated(self, version: int) -> None:
        """The trainer's update `version` is committed (in a league, its snapshot taken too):
        send the new policy and pool, then ask for the step that will be played with them
        (version + k + 1)."""
        if not self.process.is_alive():
            raise self._exited(f"after update {version}")
        self._send_policy(version)
        self._request_next()

    def take(self, step: int) -> Played:
        """Step `step`'s episodes, waiting for the worker if it is still playing them."""
        while True:
            try:
                kind, got, *payload = self.outbox.get(timeout=self.poll_seconds)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise self._exited(f"while playing step {step}") from None
        if kind == "error":
            error, name, message, trace = payload
            if error is not None:  # the worker's own error (a server that stopped answering): said as in-process
                error.add_note(f"in the rollout worker, at step {got}:\n{trace}")
                raise error
            raise RolloutWorkerError(f"the rollout worker failed at step {got}: {name}: {message}\n{trace}")
        if got != step:
            raise RolloutWorkerError(f"the rollout worker sent step {got} where step {step} was due")
        batch, version, seconds = payload
        self.run.episode_log(f"step-{step:06d}").extend(batch.episodes)  # logged once the trainer takes them
        return Played(batch, version, seconds, self.plans.pop(step))

    def _exited(self, when: str) -> RolloutWorkerError:
        self.process.join(timeout=5)
        return RolloutWorkerError(f"the rollout worker process exited (code {self.process.exitcode}) {when}")

    def close(self) -> None:
        """Stop the worker now; rollouts still in flight are dropped (nothing of them was logged)."""
        if self.process is None:
            return
        self.inbox.put(("stop",))
        self.process.join(timeout=2)  # idle: it stops at once; mid-rollout: its work is dropped anyway
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        for q in (self.inbox, self.outbox):
            q.cancel_join_thread()  # what is left in them was never going to be read
            q.close()
        self.process = None
        torch.set_num_threads(self.trainer_threads)  # the worker's share back


def thread_shares(threads: int, staleness: int, holds_model: bool = True) -> tuple[int, int]:
    """(trainer, worker) torch threads out of the trainer's `threads`. With staleness >= 1 the
    worker plays while the trainer updates, so each asking for every core would put twice as
    many threads as cores to spin against each other: a worker with its own model copy gets
    half (at least 1) and the trainer the rest; one playing through a shared server runs no
    model (tokenising and waiting on HTTP), so 1 is enough and the trainer keeps its own. At
    staleness 0 the two never run at once: each keeps every thread.

    >>> thread_shares(8, 1), thread_shares(1, 1), thread_shares(8, 1, holds_model=False), thread_shares(8, 0)
    ((4, 4), (1, 1), (8, 1), (8, 8))
    """
    if not staleness:
        return threads, threads
    worker = max(1, threads // 2) if holds_model else 1
    return (max(1, threads - worker) if holds_model else threads), worker


def check_sendable(scenario) -> None:
    """A scenario object given to the run (not loaded by name) must reach the worker process."""
    if scenario is None:
        return
    import pickle  # the worker's start message only: nothing a user loads

    try:
        pickle.dumps(scenario)
    except Exception as exc:  # noqa: BLE001 - whatever stops it, the fix is the same
        from multiagent_rl.config import ConfigError

        raise ConfigError(
            f"rollout.max_staleness >= 1 plays in a worker process, which cannot receive scenario "
            f"{scenario.name!r} ({type(exc).__name__}: {exc}); register it by name, or use max_staleness 0"
        ) from exc


def make_rollouts(run, staleness: int):
    return RolloutWorker(run, staleness) if staleness else InlineRollouts(run)


def policy_state(run) -> dict[str, Any]:
    """What the worker needs to play with the trainer's current adapters: their weights, or
    with a shared server, the names the server serves them under (loaded by the trainer)."""
    if run.config.rollout.server:
        return {"served": run.backend.served_versions()}
    return {"weights": adapter_weights(run.model, run.team.policy_adapters)}


def pool_changes(run, held: Sequence[str]) -> dict[str, Any] | None:
    """The league snapshots the trainer's team froze or dropped since the worker's `held`
    (None: none): the names dropped and each added one's weights (with a shared server, None:
    the worker plays it by the name the server serves it under)."""
    frozen = run.team.frozen
    dropped = [name for name in held if name not in frozen]
    added = [name for name in frozen if name not in held]
    if not (dropped or added):
        return None
    weights = dict.fromkeys(added) if run.config.rollout.server else adapter_weights(run.model, added)
    return {"drop": dropped, "add": weights}


def apply_pool_changes(team, changes: dict[str, Any]) -> None:
    """The worker's side of `pool_changes`: drop, then add and fill, the team's frozen adapters
    (a team following a server only names them: the server serves them)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load

    for name in changes["drop"]:
        team.drop(name)
    team.add_frozen(list(changes["add"]))
    for name, data in changes["add"].items():
        if data is not None:
            set_peft_model_state_dict(team.model, load(data), adapter_name=name)


def adapter_weights(model, adapters) -> dict[str, bytes]:
    """Each adapter's LoRA weights as safetensors bytes: what the worker loads, bit for bit."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    return {
        name: save({k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()})
        for name in adapters
    }


@dataclass
class WorkerSpec:
    """What the worker needs to build its copy of the team (sent once, at start)."""

    config: dict[str, Any]
    scenario: Any  # the scenario object the run was given, or None: loaded from the config
    threads: int
    device: str
    dtype: str
    mixed_precision: str


def worker_main(inbox, outbox, spec: WorkerSpec) -> None:
    """The worker's loop: load weights and play steps, in the order they arrive."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load

    from multiagent_rl.config import TrainConfig
    from multiagent_rl.registry import load_scenario
    from multiagent_rl.team import Team

    torch.set_num_threads(spec.threads)
    step = None
    try:
        config = TrainConfig.model_validate(spec.config)
        scenario = spec.scenario or load_scenario(config.scenario, **config.scenario_options)
        team = Team.following_server(config, scenario) if config.rollout.server else \
            Team.build(config, scenario, device=spec.device, dtype=spec.dtype, mixed_precision=spec.mixed_precision)
        version = None
        while True:
            message = inbox.get()
            if message[0] == "stop":
                return
            if message[0] == "policy":
                _, version, state = message
                if "served" in state:
                    team.backend.follow(state["served"])
                for name, data in state.get("weights", {}).items():
                    set_peft_model_state_dict(team.model, load(data), adapter_name=name)
                continue
            if message[0] == "pool":
                _, tag, changes = message
                if tag != version:
                    raise RuntimeError(f"pool changes of update {tag} arrived with policy version {version}")
                apply_pool_changes(team, changes)
                continue
            _, step, options = message
            start = time.perf_counter()
            torch.manual_seed(options["seed"])  # as the synchronous loop seeds its rollout
            batch = team.play(**options, policy_version=version)
            outbox.put(("batch", step, batch, version, time.perf_counter() - start))
    except KeyboardInterrupt:
        return
    except BaseException as exc:  # noqa: BLE001 - reported to the trainer, which stops the run
        outbox.put(("error", step, sendable(exc), type(exc).__name__, str(exc), traceback.format_exc(limit=8)))


def sendable(exc: BaseException) -> BaseException | None:
    """`exc` if it can cross to the trainer's process (most errors can), else None."""
    import pickle  # the trainer's own queue: nothing a user loads

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means: send its text only
        return None
    return exc

