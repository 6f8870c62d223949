"""Self-play in the loop, on the tiny model: seats and frozen snapshots, what an update may
change and what it must not, a resumed league equal to an uninterrupted one, `eval
--against`, the role baseline, the shaping schedule, and bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch

from multiagent_rl.cli import main
from multiagent_rl.config import ConfigError, ShapingConfig, load_config
from multiagent_rl.league import outcome_score
from multiagent_rl.records import Episode, Message, RewardEntry, Task, Turn, read_episodes
from multiagent_rl.registry import load_scenario
from trainers.base import Returns
from trainers.league_play import LeaguePlay, check_league
from trainers.loop import Run
from trainers.role_baseline import RoleBaseline

TINY = ["model=tiny", "scenario=tictactoe", "scenario_options={opponent: model}", "tasks_per_step=2", "group_size=2",
        "eval_episodes=2", "eval_every=0", "log_with=[]", "progress=false", "lr=5e-2", "lora.rank=2",
        "mixed_precision=no", "league.snapshot_every=2", "league.pool_size=2", "league.match_games=2"]


def league_run(tmp_path, name, *more):
    return Run(load_config(None, [*TINY, *more]), tmp_path / name)


def lora_weights(model, adapter):
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{adapter}." in n}


def base_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_pool_play_trains_the_learner_and_never_a_snapshot(single_thread, tmp_path):
    run = league_run(tmp_path, "pool", "league.mode=pool", "steps=4", "save_every=2", "grpo.advantage=role_baseline")
    base = base_weights(run.model)
    run.league.start()  # what a fresh run does first: the step-0 snapshot
    at_zero = lora_weights(run.model, "frozen-step-0")
    assert all(torch.equal(at_zero[n], p) for n, p in
               zip(at_zero, lora_weights(run.model, "shared").values(), strict=True))  # a copy of the learner
    played = 0
    for step in (1, 2, 3):
        run.step = step
        record = run.train_step(step)
        assert record.update["update/optimizer_steps"] >= 1  # rewards differed within groups: real updates
        assert run.league.metrics() == record.league  # reading the figures reset nothing
        played += sum(v for k, v in record.league.items() if k.startswith("league/vs/"))
    # The learner changed; the step-0 snapshot and the base weights are bit-identical.
    assert any(not torch.equal(a, b) for a, b in zip(at_zero.values(), lora_weights(run.model, "shared").values(), strict=True))
    assert all(torch.equal(at_zero[n], p) for n, p in lora_weights(run.model, "frozen-step-0").items())
    assert all(torch.equal(base[n], p) for n, p in base_weights(run.model).items())
    # The step-2 snapshot was frozen after step 2's update and has not moved since.
    assert "frozen-step-2" in run.team.frozen
    frozen_now = lora_weights(run.model, "frozen-step-2")
    run.step = 4
    run.train_step(4)
    assert all(torch.equal(frozen_now[n], p) for n, p in lora_weights(run.model, "frozen-step-2").items())
    assert played > 0


def test_pool_seats_alternate_and_snapshot_turns_are_not_trained(single_thread, tmp_path):
    run = league_run(tmp_path, "seats", "league.mode=pool", "steps=1")
    run.league.start()
    seatings, plan = run.league.plan(step=1, groups=4)
    assert [side for side, _ in plan] == ["player_2", "player_1", "player_2", "player_1"]
    for seating, (side, opponent) in zip(seatings, plan, strict=True):
        learner_agent = side  # in tic-tac-toe each player is its own team
        assert seating[learner_agent] == "shared" and opponent == "step-0"
        assert [a for a in seating.values() if a != "shared"] == ["frozen-step-0"]
    tasks = run.tasks_for_step(1)[:2]
    batch = run.team.play(tasks, adapters=seatings[:2], group_size=2, seed=1)
    for sample in batch.samples:
        assert sample.trainable == (sample.adapter == "shared")
    assert {s.adapter for s in batch.samples} == {"shared", "frozen-step-0"}


def test_a_resumed_league_equals_an_uninterrupted_one(single_thread, tmp_path):
    whole = league_run(tmp_path, "whole", "league.mode=pool", "steps=5", "save_every=1")
    whole.train()
    cut = league_run(tmp_path, "cut", "league.mode=pool", "steps=3", "save_every=1")
    cut.train()
    resumed = league_run(tmp_path, "cut", "league.mode=pool", "steps=5", "save_every=1")
    resumed.train()
    assert resumed.league.state_dict() == whole.league.state_dict()
    assert resumed.team.frozen == whole.team.frozen
    for adapter in ["shared", *whole.team.frozen]:
        a, b = lora_weights(whole.model, adapter), lora_weights(resumed.model, adapter)
        assert a.keys() == b.keys() and all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    lines = lambda name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]  # noqa: E731
    league_keys = lambda m: {k: v for k, v in m.items() if k.startswith("league/")}  # noqa: E731
    assert [league_keys(m) for m in lines("whole")] == [league_keys(m) for m in lines("cut")]


def test_mirror_play_is_one_adapter_in_every_seat(single_thread, tmp_path):
    run = league_run(tmp_path, "mirror", "league.mode=mirror", "steps=2", "grpo.advantage=role_baseline")
    assert run.agent_adapters == {"player_1": "shared", "player_2": "shared"}
    summary = run.train()
    assert run.team.frozen == ["frozen-step-0", "frozen-step-2"]
    metrics = [json.loads(x) for x in (tmp_path / "mirror" / "metrics.jsonl").open()]
    assert metrics[2]["league/vs/step-0/win"] + metrics[2]["league/vs/step-0/loss"] + metrics[2]["league/vs/step-0/draw"] == 2
    assert summary["after"]["n"] == 2 and "win_rate" in summary["after"]  # the learner against the base model
    # The step-2 match's games are training compute: token_budget counts them.
    log = tmp_path / "mirror" / "episodes" / "league-step-000002.msgpack"
    match = sum(t.completion_tokens for ep in read_episodes(log).episodes for t in ep.turns)
    assert match > 0 and [m["rollout/match_generated_tokens"] for m in metrics[1:]] == [0, match]
    assert metrics[2]["rollout/generated_tokens_total"] == sum(m["rollout/generated_tokens"] for m in metrics[1:]) + match


def test_eval_against_plays_every_seat_and_names_a_missing_snapshot(single_thread, tmp_path, capsys):
    league_run(tmp_path, "ev", "league.mode=mirror", "steps=2", "save_every=1").train()
    for opponent in ("step-1", "base", "perfect", str(tmp_path / "ev")):
        assert main(["eval", "tictactoe", "--run", str(tmp_path / "ev"), "--against", opponent, "--episodes", "2"]) == 0
        out = capsys.readouterr().out
        for result in (json.loads(out)["base"], json.loads(out)["trained"]):
            assert result["games"] == 4 and set(result["by_seat"]) == {"player_1", "player_2"}
            assert result["wins"] + result["draws"] + result["losses"] == 4
    assert main(["eval", "tictactoe", "--run", str(tmp_path / "ev"), "--against", "step-9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-9" in err and "no such checkpoint" in err and "step-1, step-2" in err


@pytest.mark.parametrize("scenario, setting, expected", [
    ("signalling", "league.mode=pool", "league.mode=pool needs a scenario with two teams or more; 'signalling' has one"),
    ("tictactoe", "league.mode=mirror", "scripted players (player_2)"),
    ("tictactoe", "league.opponents=best", "'league.opponents'"),
])
def test_bad_league_settings_are_one_line(single_thread, tmp_path, capsys, scenario, setting, expected):
    tiny = ["--set", "model=tiny", "--set", "steps=1", "--set", "log_with=[]", "--set", "progress=false"]
    code = main(["train", scenario, "--out", str(tmp_path / "r"), *tiny, "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err


def test_league_refusals_name_the_problem():
    with pytest.raises(ConfigError, match="two teams or more"):
        check_league("pool", load_scenario("signalling"))
    with pytest.raises(ConfigError, match="scripted players"):
        check_league("mirror", load_scenario("tictactoe"))  # a random player holds player_2
    with pytest.raises(ConfigError, match="vllm.max_loras >= 5"):
        load_config(None, ["backend=vllm", "league.mode=pool", "league.pool_size=4", "vllm.max_loras=4"])


def test_the_role_baseline_against_hand_computed_values():
    est = RoleBaseline()
    settings = load_config(None, ["grpo.baseline_decay=0.5"]).grpo
    first = Returns(torch.tensor([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]), torch.arange(3), torch.tensor([0, 0, 1]))
    a = est(first, settings).advantages
    assert a.tolist() == [[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]  # the baseline starts at 0
    assert est.baselines == pytest.approx([1 / 6, -1 / 6])  # 0.5 * 0 + 0.5 * mean(1, 1, -1)
    second = Returns(torch.tensor([[1.0, -1.0]]), torch.tensor([0]), torch.tensor([0]))
    assert est(second, settings).advantages[0].tolist() == pytest.approx([1 - 1 / 6, -1 + 1 / 6])
    restored = RoleBaseline()
    restored.load_state_dict(json.loads(json.dumps(est.state_dict())))
    assert restored.baselines == est.baselines


def test_shaping_anneals_and_is_left_out_of_what_the_trainer_sees():
    schedule = ShapingConfig(stop_when_invalid_below=0.05, anneal_steps=4)
    assert [schedule.weight(s, None) for s in (1, 9)] == [1.0, 1.0]
    assert [schedule.weight(s, 10) for s in (10, 11, 13, 14, 20)] == [1.0, 0.75, 0.25, 0.0, 0.0]
    turn = Turn(agent="a", round=0, message=Message(sender="a", round=0, text="1"), rewards=[RewardEntry(agent="a", value=0.1, term="legal_move")])
    episode = Episode(episode_id="e", scenario="s", task=Task(key="t", prompt=""), turns=[turn],
                      final=[RewardEntry(agent="a", value=1.0, term="result")])
    assert episode.reweighted({"legal_move": 0.5}).returns() == {"a": pytest.approx(1.05)}
    assert episode.returns() == {"a": pytest.approx(1.1)}  # the record keeps what was played


def test_outcome_score_reads_the_winner_else_the_final_lines():
    teams = {"a": "red", "b": "blue"}
    won = Episode(episode_id="e", scenario="s", task=Task(key="t", prompt=""), winner="a", teams=teams)
    assert outcome_score(won, "red", teams) == 1.0 and outcome_score(won, "blue", teams) == 0.0
    final = [RewardEntry(agent="a", value=0.4), RewardEntry(agent="b", value=0.6)]
    scored = Episode(episode_id="e", scenario="s", task=Task(key="t", prompt=""), final=final, teams=teams)
    assert outcome_score(scored, "blue", teams) == 1.0 and outcome_score(scored, "red", teams) == 0.0
    shaped = Turn(agent="a", round=0, message=Message(sender="a", round=0, text="x"), rewards=[RewardEntry(agent="a", value=5.0, term="legal_move")])
    tie = Episode(episode_id="e", scenario="s", task=Task(key="t", prompt=""), turns=[shaped],
                  final=[RewardEntry(agent="a", value=0.0), RewardEntry(agent="b", value=0.0)], teams=teams)
    assert outcome_score(tie, "red", teams) == 0.5  # shaping is not play


def test_reading_the_league_figures_changes_nothing():
    from types import SimpleNamespace

    from trainers.distributed import Ranks

    team = SimpleNamespace(config=load_config(None, [*TINY, "league.mode=pool"]),
                           scenario=load_scenario("tictactoe", opponent="model"))
    play = LeaguePlay(team, Ranks(), seed=0)
    play.league.add_snapshot("step-0")
    play.league.record("step-0", 1)
    first = play.metrics()
    assert play.metrics() == first and first["league/vs/step-0/win"] == 1
    play.reset_step()  # the loop's, once per step
    assert play.metrics()["league/vs/step-0/win"] == 0


def test_saved_pool_names_the_frozen_adapters(tmp_path):
    folder = tmp_path / "step-4"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"league": {"pool": ["step-0", "step-4"]}}))
    assert LeaguePlay.saved_pool(folder) == ["frozen-step-0", "frozen-step-4"]
    (folder / "trainer_state.json").write_text(json.dumps({"step": 4}))
    assert LeaguePlay.saved_pool(folder) == []


def test_a_kuhn_league_logs_exploitability_at_each_evaluation(single_thread, tmp_path):
    run = Run(load_config(None, ["model=tiny", "scenario=kuhn_poker", "scenario_options={opponent: model}",
                                 "league.mode=mirror", "steps=1", "tasks_per_step=2", "group_size=2", "eval_episodes=2",
                                 "log_with=[]", "progress=false", "lora.rank=2", "mixed_precision=no"]), tmp_path / "k")
    summary = run.train()
    assert 0.0 <= summary["before"]["exploitability"] <= 2.0 and "exploitability" in summary["after"]
    logged = [json.loads(x) for x in (tmp_path / "k" / "metrics.jsonl").open()]
    assert [m["step"] for m in logged if "eval/exploitability" in m] == [0, 1]
    # each evaluation's strategy table beside it: Kuhn's 12 information states, each move's probability
    tables = {m["step"]: json.loads((tmp_path / "k" / "strategy" / f"step-{m['step']:06d}.json").read_text())
              for m in logged if "eval/exploitability" in m}
    for step, table in tables.items():
        assert table["step"] == step and table["exploitability"] == pytest.approx(
            next(m["eval/exploitability"] for m in logged if m["step"] == step))
        assert len(table["policy"]) == 12 and {"0", "0pb", "2b"} <= table["policy"].keys()
        assert all(sum(moves.values()) == pytest.approx(1.0) for moves in table["policy"].values())
    assert sorted(p.name for p in (tmp_path / "k" / "strategy").iterdir()) == ["step-000000.json", "step-000001.json"]


def test_a_run_resumed_into_a_league_starts_one_and_says_so(single_thread, tmp_path):
    Run(load_config(None, [*TINY, "adapters=shared", "steps=1"]), tmp_path / "r").train()
    with pytest.raises(ConfigError, match="league"):  # the league shapes the run's streams
        Run(load_config(None, [*TINY, "adapters=shared", "league.mode=mirror", "steps=2"]), tmp_path / "r").train()
    resumed = Run(load_config(None, [*TINY, "adapters=shared", "league.mode=mirror", "steps=2"]), tmp_path / "r",
                  allow_changes=True)
    resumed.train()
    assert resumed.league.league.pool[0] == "step-1"
    notes = [json.loads(x) for x in (tmp_path / "r" / "config-changes.jsonl").open()]
    assert any("holds no league" in n for line in notes for n in line.get("notes", []))


def test_a_run_folder_from_before_the_league_resumes_without_changes():
    from multiagent_rl.config import changed_settings

    config = load_config(None, [])
    saved = config.model_dump()
    del saved["league"], saved["shaping"]
    assert changed_settings(saved, config) == {}
