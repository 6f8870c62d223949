"""Where a training step's episodes come from: played in place when the step starts
(`rollout.max_staleness: 0`, the synchronous loop), or by a rollout worker process that
plays step t+1 while the trainer updates on step t (k >= 1).

The worker holds its own copy of the model (base weights and LoRA adapters, built from
the run's config as the trainer's was) and generates with the HF backend. After each
update the trainer sends it the new adapter weights, tagged with their version (the update
count). Requests and weights reach the worker in one ordered pipe, so step s is always
played with version max(start, s - 1 - k), whatever the timing: the run is deterministic.

>>> source = RolloutWorker(run, staleness=1)    # doctest: +SKIP
>>> source.start(version=0, first_step=1, last_step=20)
>>> batch = source.take(1)                      # played with version 0
>>> source.updated(1)                           # weights v1 sent; step 3 requested

Resume: a checkpoint holds the committed adapters only, so the rollouts that were in
flight when the run stopped are dropped; the resumed run plays them again from the
checkpoint's adapters (step R+1..R+k at version R). A resumed run is deterministic, and
differs from an uninterrupted one in those k steps' policy versions.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from multiagent_rl.rollout import RolloutBatch


@dataclass
class Played:
    """A step's episodes and how they were made."""

    batch: RolloutBatch
    version: int  # the update count of the adapters that played them
    seconds: float  # the rollout's own time (the worker's, when one plays ahead)


class InlineRollouts:
    """k = 0: each step is played in place with the adapters just updated."""

    staleness = 0

    def __init__(self, run):
        self.run = run

    def start(self, version: int, first_step: int, last_step: int) -> None:
        pass

    def take(self, step: int) -> Played:
        start = time.perf_counter()
        log = self.run.episode_log(f"step-{step:06d}")
        batch = self.run.team.play(**self.run.play_options(step), log=log, policy_version=step - 1)
        return Played(batch, step - 1, time.perf_counter() - start)

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
        self.process = None
        self.conn = None

    def start(self, version: int, first_step: int, last_step: int) -> None:
        """Start the worker on the adapters of `version` and ask for steps first_step ..
        first_step + k: each is played with `version` (the in-flight ones of a resumed run
        are played again from the checkpoint's adapters)."""
        run = self.run
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pools mid-use
        self.conn, child = context.Pipe()
        spec = WorkerSpec(
            config=run.config.model_dump(mode="json"), scenario=run.given_scenario, threads=torch.get_num_threads(),
            device=str(run.device), dtype=run.dtype, mixed_precision=run.accelerator.mixed_precision,
        )
        self.process = context.Process(target=worker_main, args=(child, spec), name="rollout-worker", daemon=True)
        self.process.start()
        child.close()
        self.last_step = last_step
        self._send("weights", version, adapter_weights(run.model, run.team.policy_adapters))
        self.requested = first_step - 1
        for _ in range(self.staleness + 1):
            self._request_next()

    def _request_next(self) -> None:
        if self.requested < self.last_step:
            self.requested += 1
            self._send("play", self.requested, self.run.play_options(self.requested, progress=False))

    def updated(self, version: int) -> None:
        """The trainer's update `version` is done: send its weights, then ask for the step
        that will be played with them (version + k + 1)."""
        self._send("weights", version, adapter_weights(self.run.model, self.run.team.policy_adapters))
        self._request_next()

    def take(self, step: int) -> Played:
        """Step `step`'s episodes, waiting for the worker if it is still playing them."""
        try:
            while not self.conn.poll(self.poll_seconds):
                if not self.process.is_alive():
                    raise EOFError
            kind, got, *payload = self.conn.recv()
        except (EOFError, ConnectionResetError) as exc:
            self.process.join(timeout=5)
            raise RolloutWorkerError(
                f"the rollout worker process exited (code {self.process.exitcode}) while playing step {step}"
            ) from exc
        if kind == "error":
            name, message, trace = payload
            raise RolloutWorkerError(f"the rollout worker failed at step {got}: {name}: {message}\n{trace}")
        if got != step:
            raise RolloutWorkerError(f"the rollout worker sent step {got} where step {step} was due")
        batch, version, seconds = payload
        self.run.episode_log(f"step-{step:06d}").extend(batch.episodes)  # logged once the trainer takes them
        return Played(batch, version, seconds)

    def _send(self, *message: Any) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
            raise RolloutWorkerError(
                f"the rollout worker process is gone (exit code {self.process.exitcode}): {exc}"
            ) from exc

    def close(self) -> None:
        """Stop the worker; rollouts still in flight are dropped (nothing of them was logged)."""
        if self.process is None:
            return
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process = None


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


def adapter_weights(model, adapters) -> dict[str, dict[str, torch.Tensor]]:
    """Each adapter's LoRA weights, copied to the CPU: what the worker loads."""
    from peft import get_peft_model_state_dict

    return {
        name: {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
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


def worker_main(conn, spec: WorkerSpec) -> None:
    """The worker's loop: load weights and play steps, in the order they arrive."""
    from peft import set_peft_model_state_dict

    from multiagent_rl.config import TrainConfig
    from multiagent_rl.registry import load_scenario
    from multiagent_rl.team import Team

    torch.set_num_threads(spec.threads)
    step = None
    try:
        config = TrainConfig.model_validate(spec.config)
        scenario = spec.scenario or load_scenario(config.scenario, **config.scenario_options)
        team = Team.build(config, scenario, device=spec.device, dtype=spec.dtype, mixed_precision=spec.mixed_precision)
        version = None
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            if message[0] == "weights":
                _, version, weights = message
                for name, state in weights.items():
                    set_peft_model_state_dict(team.model, state, adapter_name=name)
                continue
            _, step, options = message
            start = time.perf_counter()
            torch.manual_seed(options["seed"])  # as the synchronous loop seeds its rollout
            batch = team.play(**options, policy_version=version)
            conn.send(("batch", step, batch, version, time.perf_counter() - start))
    except (EOFError, KeyboardInterrupt):
        return  # the trainer is gone: nothing to report to
    except BaseException as exc:  # noqa: BLE001 - reported to the trainer, which stops the run
        try:
            conn.send(("error", step, type(exc).__name__, str(exc), traceback.format_exc(limit=8)))
        except (BrokenPipeError, OSError):
            pass
