"""A league playing ahead (`rollout.max_staleness: 1`), on the tiny model: the rollout worker
plays step s with the adapters of update s - 2 and the pool that update was committed with,
the run is deterministic and resumes deterministically, and through a shared server a
dropped snapshot stays served until no step in flight can meet it."""

from __future__ import annotations

import io
import json
import shutil
import time
from types import SimpleNamespace

import torch
from test_server_backend import FakeVLLM, Handler

from multiagent_rl.config import load_config
from multiagent_rl.records import read_episodes
from multiagent_rl.registry import load_scenario
from multiagent_rl.team import Team, agent_adapter_map
from trainers.distributed import Ranks
from trainers.league_play import LeaguePlay
from trainers.loop import Run
from trainers.rollout_ahead import apply_pool_changes, pool_changes

TINY = ["model=tiny", "scenario=tictactoe", "scenario_options={opponent: model}", "tasks_per_step=2", "group_size=2",
        "eval_episodes=2", "eval_every=0", "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2",
        "mixed_precision=no", "league.snapshot_every=2", "league.pool_size=2", "league.match_games=2",
        "rollout.max_staleness=1"]


def league_run(path, *more) -> Run:
    return Run(load_config(None, [*TINY, *more]), path)


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def metrics(path) -> list[dict]:
    return [m for m in map(json.loads, (path / "metrics.jsonl").open()) if m["step"] > 0]


def episodes(path, step: int):
    return read_episodes(path / "episodes" / f"step-{step:06d}.msgpack").episodes


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_a_mirror_league_plays_ahead_and_trains(single_thread, tmp_path):
    run = league_run(tmp_path / "m", "league.mode=mirror", "steps=3", "grpo.advantage=role_baseline")
    start = lora_weights(run.model)
    base = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_" not in n}
    run.train()
    logged = metrics(tmp_path / "m")
    assert [m["rollout/staleness"] for m in logged] == [0, 1, 1]
    assert [{ep.policy_version for ep in episodes(tmp_path / "m", s)} for s in (1, 2, 3)] == [{0}, {0}, {1}]
    assert run.team.frozen == ["frozen-step-0", "frozen-step-2"] == run.rollouts.held  # the worker got the snapshot
    assert sum(logged[1][f"league/vs/step-0/{k}"] for k in ("win", "draw", "loss")) == 2  # step 2's match
    end = lora_weights(run.model)
    shared = [n for n in start if ".shared." in n]
    assert any(not torch.equal(start[n], end[n]) for n in shared)
    assert all(torch.equal(start[n], end[n.replace(".shared.", ".frozen-step-0.")]) for n in shared)
    assert all(torch.equal(base[n], p) for n, p in run.model.named_parameters() if "lora_" not in n)


def test_a_step_played_ahead_meets_the_pool_its_policy_was_committed_with(single_thread, tmp_path):
    run = league_run(tmp_path / "p", "league.mode=pool", "league.opponents=latest", "league.match_games=0", "steps=5")
    taken, take = [], run.rollouts.take
    run.rollouts.take = lambda step: taken.append(take(step)) or taken[-1]
    run.train()
    # Step s plays version max(0, s - 2) against the newest snapshot that version's pool held:
    # step-0 until update 2, step-2 after it; update 4 drops step-2 for step-4, but step 5
    # (version 3) still meets step-2. At max_staleness 0 step 5 would meet step-4.
    met = {s: {t.adapter for ep in episodes(tmp_path / "p", s) for t in ep.turns} - {"shared"} for s in range(1, 6)}
    assert met == {1: {"frozen-step-0"}, 2: {"frozen-step-0"}, 3: {"frozen-step-0"},
                   4: {"frozen-step-2"}, 5: {"frozen-step-2"}}
    assert [{ep.policy_version for ep in episodes(tmp_path / "p", s)} for s in range(1, 6)] == [{0}, {0}, {1}, {2}, {3}]
    snapshot_turns = [s for played in taken for s in played.batch.samples if s.adapter != "shared"]
    assert snapshot_turns and not any(s.trainable for s in snapshot_turns)  # the worker knew them frozen
    assert run.team.frozen == ["frozen-step-0", "frozen-step-4"] and run.league.league.pool == ["step-0", "step-4"]
    logged = metrics(tmp_path / "p")
    played = lambda m, name: sum(m.get(f"league/vs/{name}/{k}", 0) for k in ("win", "draw", "loss"))  # noqa: E731
    assert played(logged[3], "step-2") == 4  # step 4's games, recorded
    assert "league/vs/step-2/win" not in logged[4]  # step 5's games met a snapshot the pool has dropped: unrated


def test_a_league_playing_ahead_is_deterministic(single_thread, tmp_path):
    runs = [league_run(tmp_path / name, "league.mode=pool", "league.opponents=pfsp", "steps=4") for name in "ab"]
    for run in runs:
        run.train()
    a, b = runs
    assert a.league.state_dict() == b.league.state_dict() and a.team.frozen == b.team.frozen
    assert same_weights(lora_weights(a.model), lora_weights(b.model))
    assert [ep.turns for s in (3, 4) for ep in episodes(tmp_path / "a", s)] == \
        [ep.turns for s in (3, 4) for ep in episodes(tmp_path / "b", s)]


def test_a_resumed_league_playing_ahead_equals_another_such_resume(single_thread, tmp_path):
    league_run(tmp_path / "a", "league.mode=pool", "steps=2", "save_every=1").train()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    resumed = []
    for name in "ab":
        run = league_run(tmp_path / name, "league.mode=pool", "steps=4", "save_every=1")
        assert run.train()["resumed_from"] == 2
        resumed.append(run)
    a, b = resumed
    assert a.league.state_dict() == b.league.state_dict()
    assert a.team.frozen == b.team.frozen == ["frozen-step-0", "frozen-step-4"]
    assert same_weights(lora_weights(a.model), lora_weights(b.model))
    # The in-flight steps 3 and 4 were dropped and played again with the checkpoint's version 2.
    assert [m["rollout/staleness"] for m in metrics(tmp_path / "a")] == [0, 1, 0, 1]
    assert {ep.policy_version for s in (3, 4) for ep in episodes(tmp_path / "a", s)} == {2}


class LongContext(Handler):
    """The fake server's answers, with room for a tic-tac-toe prompt; a request for the step-2
    snapshot is answered after 4 s, so step 5's are still in flight when update 4 drops it."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if str(json.loads(body).get("model")).startswith("frozen-step-2@"):
            time.sleep(4)
        self.rfile = io.BytesIO(body)
        super().do_POST()

    def do_GET(self) -> None:
        s = self.server
        data = [{"id": s.model, "root": s.model, "parent": None, "max_model_len": 4096}]
        data += [{"id": name, "root": path, "parent": s.model} for name, path in s.loras.items()]
        self._send(200, {"object": "list", "data": data})


def test_a_pool_league_plays_ahead_through_a_server(single_thread, tmp_path):
    server = FakeVLLM(model="tiny")
    server.RequestHandlerClass = LongContext
    try:
        run = league_run(tmp_path / "s", "league.mode=pool", "league.opponents=latest", "league.match_games=0",
                         "steps=5", f"rollout.server={server.url}")
        run.train()
    finally:
        server.shutdown()
        server.server_close()
    met = {s: {t.adapter for ep in episodes(tmp_path / "s", s) for t in ep.turns} - {"shared"} for s in range(1, 6)}
    assert met == {1: {"frozen-step-0"}, 2: {"frozen-step-0"}, 3: {"frozen-step-0"},
                   4: {"frozen-step-2"}, 5: {"frozen-step-2"}}  # served names, followed by the worker
    # Dropped at update 4 but met by step 5: unloaded once, after update 5 (unloaded at update 4,
    # step 5's requests would find it gone and the worker would load it again, for good).
    assert [kind for kind, name in server.events if name.startswith("frozen-step-2@")] == ["load", "unload"]
    assert {name.partition("@")[0] for name in server.loras} == {"shared", "frozen-step-0", "frozen-step-4"}


def test_through_a_server_a_dropped_snapshot_stays_served_until_no_step_can_meet_it():
    def league(*more):
        calls = []
        team = SimpleNamespace(
            config=load_config(None, [*TINY, "league.mode=pool", "league.match_games=0",
                                      "rollout.server=http://127.0.0.1:9", *more]),
            scenario=load_scenario("tictactoe", opponent="model"),
            freeze=lambda name: calls.append(("freeze", name)),
            drop=lambda name, unserve=True: calls.append(("drop", name, unserve)),
            unserve=lambda name: calls.append(("unserve", name)),
        )
        play = LeaguePlay(team, Ranks(), seed=0)
        play.start()
        for step in (1, 2, 3, 4, 5, 6):
            play.after_update(step, sampling=None, log=None)
        return calls

    # Update 4 drops step-2, but step 5 (planned after update 3) meets it: it is unserved
    # after update 5, once step 5's batch is taken.
    assert league() == [("freeze", "frozen-step-0"), ("freeze", "frozen-step-2"), ("drop", "frozen-step-2", False),
                        ("freeze", "frozen-step-4"), ("unserve", "frozen-step-2"), ("drop", "frozen-step-4", False),
                        ("freeze", "frozen-step-6")]
    assert ("drop", "frozen-step-2", True) in league("rollout.max_staleness=0")  # no worker: unserved at once


def test_a_worker_following_a_server_learns_the_pool_by_name():
    config = load_config(None, [*TINY, "league.mode=pool", "rollout.server=http://127.0.0.1:9"])
    scenario = load_scenario("tictactoe", opponent="model")
    run = SimpleNamespace(config=config, team=SimpleNamespace(frozen=["frozen-step-0", "frozen-step-4"]))
    held = ["frozen-step-0", "frozen-step-2"]
    changes = pool_changes(run, held)
    assert changes == {"drop": ["frozen-step-2"], "add": {"frozen-step-4": None}}  # no weights: the server has them
    assert pool_changes(run, run.team.frozen) is None
    unloaded = []
    follower = Team(config, scenario, None, None, SimpleNamespace(unload=unloaded.append), agent_adapter_map(config, scenario))
    assert follower.agent_adapters == {"player_1": "shared", "player_2": "shared"}  # what the trainer serves
    follower.frozen = list(held)
    apply_pool_changes(follower, changes)
    assert follower.frozen == ["frozen-step-0", "frozen-step-4"] and unloaded == ["frozen-step-2"]
