"""Rollout ahead of the update (`rollout.max_staleness`): a worker process with its own
model copy plays what the loop would play with the same adapters, step s is played with
the adapters of update s - 1 - k, a resume plays the dropped in-flight steps again from
the checkpoint, and what cannot run in a worker is refused (a league playing ahead:
test_league_ahead.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from duo_run import duo

from multiagent_rl import Role, Scenario, Task, complete, individual_rewards, read_episodes
from multiagent_rl.config import ConfigError, load_config
from multiagent_rl.seeds import step_seed
from trainers.loop import Run
from trainers.rollout_ahead import RolloutWorker, RolloutWorkerError, thread_shares


def config(*overrides: str):
    return load_config(None, [
        "scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=3",
        "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01", *overrides,
    ])


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def base_state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items() if "lora_" not in n}


def texts(run_dir, step: int) -> list[list[str]]:
    found = read_episodes(run_dir / "episodes" / f"step-{step:06d}.msgpack").episodes
    return [[t.message.text for t in ep.turns] for ep in found]


def versions(run_dir, step: int) -> set[int | None]:
    return {ep.policy_version for ep in read_episodes(run_dir / "episodes" / f"step-{step:06d}.msgpack").episodes}


def metrics(run) -> list[dict]:
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["step"] > 0]


def test_a_worker_at_staleness_0_plays_and_trains_exactly_as_the_loop(tmp_path):
    inline = Run(config("steps=2"), tmp_path / "inline", scenario=duo())
    inline.train()
    worker = Run(config("steps=2"), tmp_path / "worker", scenario=duo())
    worker.rollouts = RolloutWorker(worker, staleness=0)  # the worker's weight hand-off, without overlap
    before = base_state(worker.model)
    worker.train()
    for step in (1, 2):
        assert texts(inline.run_dir, step) == texts(worker.run_dir, step)
    a, b = lora_state(inline.model), lora_state(worker.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    after = base_state(worker.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    drop = ("perf/",)
    for m_a, m_b in zip(metrics(inline), metrics(worker), strict=True):
        assert {k: v for k, v in m_a.items() if not k.startswith(drop)} == {
            k: v for k, v in m_b.items() if not k.startswith(drop)
        }


def test_k1_plays_each_step_with_the_adapters_one_update_old(tmp_path):
    ahead = Run(config("steps=3", "rollout.max_staleness=1"), tmp_path / "ahead", scenario=duo())
    start = lora_state(ahead.model)
    ahead.train()
    assert [m["rollout/staleness"] for m in metrics(ahead)] == [0, 1, 1]
    assert [versions(ahead.run_dir, s) for s in (1, 2, 3)] == [{0}, {0}, {1}]
    assert all(m["update/skipped"] == 0 for m in metrics(ahead))
    end = lora_state(ahead.model)
    assert any(not torch.equal(start[n], end[n]) for n in start)
    # Update 1 saw step 1's episodes, played with version 0 as in the synchronous loop: the
    # same adapters. Played with them, step 3's options give the episodes the worker logged.
    sync = Run(config("steps=1"), tmp_path / "sync", scenario=duo())
    sync.train()
    torch.manual_seed(step_seed(sync.config.seed, 3, 0))
    replayed = sync.team.play(**sync.play_options(3))
    assert [[t.message.text for t in ep.turns] for ep in replayed.episodes] == texts(ahead.run_dir, 3)
    assert texts(ahead.run_dir, 2) != texts(sync.run_dir, 1)  # another step's tasks and seeds


def test_a_resume_plays_the_in_flight_steps_again_from_the_checkpoint(tmp_path):
    first = Run(config("steps=2", "save_every=1", "rollout.max_staleness=1"), tmp_path / "a", scenario=duo())
    first.train()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    resumed = []
    for name in ("a", "b"):
        run = Run(config("steps=4", "save_every=1", "rollout.max_staleness=1"), tmp_path / name, scenario=duo())
        assert run.train()["resumed_from"] == 2
        resumed.append(run)
    a, b = (lora_state(r.model) for r in resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)  # deterministic from the checkpoint
    assert versions(tmp_path / "a", 3) == {2} and versions(tmp_path / "a", 4) == {2}
    assert [m["rollout/staleness"] for m in metrics(resumed[0])] == [0, 1, 0, 1]


def test_a_worker_that_dies_stops_the_step_with_one_clear_line(tmp_path):
    run = Run(config("steps=2", "rollout.max_staleness=1"), tmp_path, scenario=duo())
    worker = run.rollouts
    worker.start(version=0, first_step=1, last_step=2)
    try:
        worker.process.kill()
        worker.process.join()
        with pytest.raises(RolloutWorkerError, match="exited .* while playing step 1"):
            worker.take(1)
    finally:
        worker.close()


def test_what_cannot_play_in_a_worker_is_refused():
    with pytest.raises(ConfigError, match="max_staleness=1 .*backend=vllm"):
        load_config(None, ["scenario=debate", "rollout.max_staleness=1", "backend=vllm"])
    load_config(None, ["scenario=tictactoe", "rollout.max_staleness=1", "league.mode=pool"])  # a league plays ahead too


def test_a_scenario_the_worker_cannot_receive_is_named(tmp_path):
    unsendable = Scenario(
        name="local", roles=[Role("a", "Say it."), Role("b", "Say it.")], graph=complete(["a", "b"]),
        schedule=[["a", "b"]], make_task=lambda rng: Task(key="k", prompt="p", answer="a"),
        reward=lambda task, episode: individual_rewards({"a": 1.0, "b": 0.0}),
    )
    with pytest.raises(ConfigError, match="worker process, which cannot receive scenario 'local'"):
        Run(config("steps=1", "rollout.max_staleness=1"), tmp_path, scenario=unsendable)


def test_an_error_in_the_worker_reaches_the_trainer_as_itself(tmp_path):
    from multiagent_rl.backends.server import ServerError
    from trainers.rollout_ahead import sendable

    run = Run(config("steps=2", "rollout.max_staleness=1"), tmp_path, scenario=duo())
    worker = run.rollouts
    worker.start(version=0, first_step=1, last_step=0)  # nothing requested: the queue holds only what is put here
    try:
        failure = ServerError("the vLLM server at http://127.0.0.1:9 failed to generate")
        worker.outbox.put(("error", 1, sendable(failure), "ServerError", str(failure), "Traceback ..."))
        with pytest.raises(ServerError, match="127.0.0.1:9") as caught:
            worker.take(1)
        assert "in the rollout worker, at step 1" in caught.value.__notes__[0]
    finally:
        worker.close()
    unpicklable = RuntimeError(lambda: None)
    assert sendable(unpicklable) is None and sendable(failure) is failure


def test_the_worker_takes_its_share_of_the_threads_and_gives_it_back(monkeypatch):
    import multiprocessing
    from types import SimpleNamespace

    specs = []

    class Process:  # records the worker's spec instead of starting a process
        def __init__(self, target, args, name, daemon):
            specs.append(args[2])

        def start(self):
            pass

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass

    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setattr("trainers.rollout_ahead.multiprocessing.get_context",
                        lambda method: SimpleNamespace(Queue=spawn.Queue, Process=Process))
    monkeypatch.setattr("trainers.rollout_ahead.policy_state", lambda run: {})
    run = SimpleNamespace(config=config("rollout.max_staleness=1"), given_scenario=None, device="cpu",
                          dtype="float32", accelerator=SimpleNamespace(mixed_precision="no"), team=SimpleNamespace(frozen=[]))
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        worker = RolloutWorker(run, staleness=1)
        worker.start(version=0, first_step=1, last_step=0)
        assert specs[0].threads == 2 and torch.get_num_threads() == 2  # 4 cores' worth, not 8
        worker.close()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert thread_shares(1, 1) == (1, 1) and thread_shares(5, 1) == (3, 2)
    assert thread_shares(8, 1, holds_model=False) == (8, 1)  # through a server the worker runs no model
    assert thread_shares(8, 0) == (8, 8)  # staleness 0: never at once
