"""The report shows the sections that fit the scenario: debate dynamics only where several
agents answer in the last round, reward terms per receiving agent, and a game's results
(wins, draws, losses, ratings, the win-rate matrix, exploitability), its strategy tables before and
after training, and moves first."""

from __future__ import annotations

import json
import math
import re

import pytest

from multiagent_rl.analysis import (
    analyse,
    debating,
    episode_moves,
    exploitability_by_step,
    game_results,
    league_results,
    load_run,
    moves_by_phase,
    ratings_by_step,
    reward_terms_by_step,
    run_analysis,
    strategy_entropy,
    strategy_table,
    term_means,
    win_rate_matrix,
    write_synthetic_debate_run,
    write_synthetic_game_run,
)
from multiagent_rl.records import EpisodeLog, RewardEntry


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


# ----- signalling: a speaker and a listener ----------------------------------------------------
def _signalling(episode, step: int, speaker_right: float = 1.0):
    """Speaker (round 0) then listener (round 1); a team term for both, a term of the speaker's
    own and one of the listener's own, each written only to the agent that receives it."""
    ep = episode([("speaker", 0, "red", "red", ["listener"]), ("listener", 1, "red circle", "red circle", [])],
                 step=step, scenario="signalling", answer="red circle", team_answer="red circle", rewards={})
    ep.final = [RewardEntry(agent="speaker", value=0.7, term="picked_target"),
                RewardEntry(agent="listener", value=0.7, term="picked_target"),
                RewardEntry(agent="speaker", value=0.3 * speaker_right, term="distinguishing_word"),
                RewardEntry(agent="listener", value=0.3, term="picked_one")]
    # The scored terms may still name every agent (0 for one who never receives the term).
    ep.reward_terms = {"picked_target": {"speaker": 1.0, "listener": 1.0},
                       "distinguishing_word": {"speaker": speaker_right, "listener": 0.0},
                       "picked_one": {"speaker": 0.0, "listener": 1.0}}
    return ep


def test_a_term_is_the_mean_over_the_agents_that_receive_it(episode):
    eps = [_signalling(episode, 1), _signalling(episode, 1, speaker_right=0.0), _signalling(episode, 2)]
    assert term_means(eps[0]) == {"picked_target": 1.0, "distinguishing_word": 1.0, "picked_one": 1.0}
    values = {(r["step"], r["term"]): r["value"] for r in reward_terms_by_step(eps)}
    assert values[1, "distinguishing_word"] == pytest.approx(0.5) and values[2, "distinguishing_word"] == 1.0
    assert values[2, "picked_one"] == 1.0  # the listener's own term, not halved by the speaker
    # A log whose ledger has no line of a term: its mean over every agent the term names.
    old = _signalling(episode, 1)
    old.final = []
    assert term_means(old)["distinguishing_word"] == pytest.approx(0.5)


def test_a_signalling_run_has_no_debate_dynamics(episode, tmp_path):
    eps = [_signalling(episode, step) for step in (1, 2, 3) for _ in range(3)]
    EpisodeLog(tmp_path / "sig" / "episodes" / "all.msgpack", fsync=False).extend(eps)
    assert not debating(eps)
    text, path = run_analysis(tmp_path / "sig", progress=False)
    html = path.read_text(encoding="utf-8")
    assert "Debate dynamics" not in html and "dynamics" not in _sections(html)
    assert "last round unanimous" not in text and "flips wrong" not in text
    assert _sections(html)[0] == "summary" and "results" not in _sections(html)  # no game sections
    assert "team answer correct, early → late" in text  # the tasks have a reference answer
    analysis = analyse(load_run(tmp_path / "sig"), signalling=False)
    assert {r["value"] for r in analysis.reward_terms} == {1.0}  # a perfect speaker's term reads 1.0


# ----- debate: several agents answer in the last round -----------------------------------------
def test_a_debate_run_keeps_its_dynamics(tmp_path):
    run = write_synthetic_debate_run(tmp_path / "debate", steps=3, episodes_per_step=3, eval_every=0)
    assert debating(load_run(run).episodes)
    text, path = run_analysis(run, progress=False)
    html = path.read_text(encoding="utf-8")
    assert "Debate dynamics" in html and "last round unanimous (late)" in text
    assert not {"results", "moves"} & set(_sections(html))


def test_debating_needs_several_answers_in_the_last_round(episode):
    one_voter = episode([("a", 0, "3"), ("b", 0, "4"), ("c", 1, "4")])  # a judge alone at the end
    unparsed = episode([("a", 0, "3"), ("a", 1, "x", None), ("b", 1, "y", None)])
    assert not debating([one_voter, unparsed]) and not debating([])
    assert debating([episode([("a", 0, "3"), ("b", 0, "4"), ("a", 1, "4"), ("b", 1, "4")]), one_voter])
    game = episode([("a", 0, "3"), ("b", 0, "4")])
    game.winner = "a"
    assert not debating([game])  # an engine's game: answers are moves


# ----- games -------------------------------------------------------------------------------------
def _game(episode, winner, moves, step=1, split="train", scripted=("b",)):
    ep = episode([(agent, i, text, None) for i, (agent, text) in enumerate(moves)], step=step, split=split)
    ep.teams, ep.scripted, ep.winner = {"a": "a", "b": "b"}, list(scripted), winner
    ep.events = [{"step": i, "agent": agent, "move": i, "name": text} for i, (agent, text) in enumerate(moves)]
    return ep


def test_game_results_count_wins_draws_losses_and_undecided(episode):
    moves = [("a", "Bet"), ("b", "Pass")]
    eps = [_game(episode, "b", moves, step=1)] + [_game(episode, w, moves, step=4) for w in ("a", "a", "b", "draw", None)]
    eps += [_game(episode, w, moves, step=3, split="eval") for w in ("a", "b")]
    rows = game_results(eps)
    assert [r["side"] for r in rows] == ["a", "a", "a"]  # the scripted side b is no model's
    early, late, held_out = rows
    assert early["phase"] == "early (step 1)" and (early["games"], early["losses"]) == (1, 1)
    assert late["phase"] == "late (step 4)"
    assert (late["games"], late["wins"], late["draws"], late["losses"], late["undecided"]) == (5, 2, 1, 1, 1)
    assert late["win_share"] == pytest.approx(0.4) and late["decided_share"] == pytest.approx(0.8)
    assert held_out["phase"] == "eval (step 3)" and held_out["wins"] == 1 and held_out["losses"] == 1
    selfplay = game_results([_game(episode, "b", moves, scripted=())])  # one step: one phase
    assert [(r["phase"], r["side"], r["wins"], r["losses"]) for r in selfplay] == [
        ("training (step 1)", "a", 0, 1), ("training (step 1)", "b", 1, 0)]


def test_moves_come_from_the_engine_events_else_the_turns(episode):
    ep = _game(episode, "a", [("a", "Bet"), ("b", "Pass")])
    ep.events.append({"step": 2, "agent": "a", "invalid": "no idea", "forfeit": True})
    assert episode_moves(ep) == [("a", "Bet"), ("b", "Pass"), ("a", "(invalid)")]
    talk = episode([("a", 0, "I keep 3 books\nand more", None), ("b", 0, "deal", "accept")])
    assert episode_moves(talk) == [("a", "I keep 3 books"), ("b", "accept")]

    early = [_game(episode, "a", [("a", "Pass"), ("b", "Bet")], step=1) for _ in range(3)]
    late = [_game(episode, "a", [("a", "Bet"), ("b", "Pass"), ("a", "Bet")], step=9) for _ in range(3)]
    late.append(_game(episode, "a", [("a", "Pass"), ("b", "Pass")], step=9))
    rows = {(r["player"], r["phase"]): r for r in moves_by_phase(early + late)}
    assert list(rows) == [("a", "early"), ("a", "late"), ("b", "early"), ("b", "late")]
    assert rows["a", "late"]["most_frequent"] == "Bet 86% · Pass 14%" and rows["a", "late"]["moves"] == 7
    assert rows["a", "late"]["opening"] == "Bet 75% · Pass 25%" and rows["a", "late"]["step"] == 9
    assert rows["b", "early"]["scripted"] and rows["b", "early"]["most_frequent"] == "Bet 100%"


def _metrics(tmp_path):
    lines = [
        {"step": 1, "league/rating/live": 1.0, "league/rating/step-0": 0.0, "league/vs/step-0/win": 2.0,
         "league/vs/step-0/draw": 1.0, "league/vs/step-0/loss": 1.0, "league/vs/base/win": 3.0, "league/vs/base/loss": 1.0},
        {"step": 2, "league/rating/live": 2.0, "league/rating/step-0": 0.5, "league/rating/step-2": 2.0,
         "league/vs/step-0/win": 1.0, "league/vs/step-0/loss": 1.0, "league/vs/step-2/loss": 2.0},
        {"step": 3, "league/vs/step-2/win": 2.0, "league/vs/step-2/draw": 2.0, "league/vs/step-0/win": 0.0},
        {"step": 3, "eval/exploitability": 0.25, "eval/team_reward_mean": 0.0},
        {"league/rating/live": 9.0},  # no step: not placed on the curve
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return load_run(tmp_path).metrics


def test_league_tables_from_the_metrics(tmp_path):
    metrics = _metrics(tmp_path)
    ratings = ratings_by_step(metrics)
    assert [(r["name"], r["step"]) for r in ratings] == [("live", 1), ("live", 2), ("step-0", 1), ("step-0", 2), ("step-2", 2)]
    assert exploitability_by_step(metrics).to_records() == [{"step": 3, "exploitability": 0.25}]
    results = {(r["phase_start"], r["opponent"]): r for r in league_results(metrics)}
    assert set(results) == {(0, "step-0"), (0, "base"), (2, "step-0"), (2, "step-2")}
    first = results[0, "step-0"]
    assert (first["phase_end"], first["games"], first["draws"], first["win_rate"]) == (1, 4, 1, pytest.approx(2 / 3))
    assert results[2, "step-2"]["games"] == 6 and results[2, "step-2"]["win_rate"] == 0.5
    assert results[2, "step-0"]["phase_end"] == 3
    matrix = win_rate_matrix(league_results(metrics))
    assert matrix.columns == ["phase", "step-0", "step-2", "base"]
    assert matrix.to_records() == [
        {"phase": "steps 0–1", "step-0": "67% (n=4)", "step-2": "–", "base": "75% (n=4)"},
        {"phase": "steps 2–3", "step-0": "50% (n=2)", "step-2": "50% (n=6)", "base": "–"},
    ]
    assert league_results([{"step": 1, "reward/team_mean": 0.1}]) == []


@pytest.fixture(scope="module")
def game_report(tmp_path_factory):
    run = write_synthetic_game_run(tmp_path_factory.mktemp("runs") / "game", steps=10, episodes_per_step=4,
                                   eval_every=5, eval_episodes=2)
    text, path = run_analysis(run, progress=False)
    return text, path.read_text(encoding="utf-8")


def test_a_game_report_leads_with_results_and_moves(game_report):
    text, html = game_report
    sections = _sections(html)
    assert sections[:4] == ["results", "strategy", "moves", "summary"] and "dynamics" not in sections
    results = html[html.index('<section id="results"'):html.index('<section id="moves"')]
    assert "Wins, draws and losses per model-played side" in results
    assert 'alt="ratings and exploitability over training"' in results
    assert "Win rate of the live policy" in results and "<th>step-0</th>" in results and "<th>base</th>" in results
    assert "(n=" in results and "Latest ratings" in results
    strategy = html[html.index('<section id="strategy"'):html.index('<section id="moves"')]
    assert "step 0 and step 10" in strategy and "<th>Bet, step 0</th>" in strategy and "<th>Pass, step 10</th>" in strategy
    assert strategy.count("<tr>") == 1 + 2 + 1 + 12 and "left out" not in strategy  # entropy: head + 2; moves: head + 12
    moves = html[html.index('<section id="moves"'):html.index('<section id="summary"')]
    assert "player_0" in moves and "player_1" in moves and ("Bet" in moves or "Pass" in moves)
    assert "league: live rating, first → last" in text and "exploitability (eval), first → last" in text
    assert "games: win / draw / loss of player_0" in text  # self-play: a line per model-played side
    assert "last round unanimous" not in text and "team answer correct" not in text


# ----- strategy tables (strategy/step-NNNNNN.json, an OpenSpiel league's evaluations) ----------
def _strategy(run, step: int, policy: dict, exploitability: float = 0.5) -> None:
    (run / "strategy").mkdir(parents=True, exist_ok=True)
    table = {"step": step, "exploitability": exploitability, "policy": policy}
    (run / "strategy" / f"step-{step:06d}.json").write_text(json.dumps(table), encoding="utf-8")


def test_the_first_and_last_strategy_tables_side_by_side_with_their_entropies(tmp_path):
    _strategy(tmp_path, 0, {"1": {"Bet": 0.5, "Pass": 0.5}, "0": {"Bet": 0.5, "Pass": 0.5}}, 0.46)
    _strategy(tmp_path, 10, {"1": {"Bet": 0.25, "Pass": 0.75}, "0": {"Bet": 0.0, "Pass": 1.0}}, 0.2)
    _strategy(tmp_path, 4, {"0": {"Bet": 0.9, "Pass": 0.1}})  # in between: read, not shown
    (tmp_path / "strategy" / "step-000012.json").write_text('{"step": 12, "policy": {"0": {"Bet": "often"}}}')
    (tmp_path / "strategy" / "step-000013.json.tmp").write_text("{")  # a cut write: not a table's name
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    run = load_run(tmp_path)
    assert [t["step"] for t in run.strategies] == [0, 4, 10]
    assert run.notes == ["strategy/step-000012.json has no policy {information state: {move: probability}}; skipped"]
    table = strategy_table([run.strategies[0], run.strategies[-1]])
    assert table.columns == ["information_state", "Bet, step 0", "Bet, step 10", "Pass, step 0", "Pass, step 10"]
    assert table.to_records() == [
        {"information_state": "0", "Bet, step 0": 0.5, "Bet, step 10": 0.0, "Pass, step 0": 0.5, "Pass, step 10": 1.0},
        {"information_state": "1", "Bet, step 0": 0.5, "Bet, step 10": 0.25, "Pass, step 0": 0.5, "Pass, step 10": 0.75},
    ]
    entropy = strategy_entropy([run.strategies[0], run.strategies[-1]]).to_records()
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 0.811 bits; the decided state's is 0
    assert entropy == [
        {"step": 0, "states": 2, "exploitability": 0.46, "mean_entropy_bits": 1.0, "uniform_entropy_bits": 1.0},
        {"step": 10, "states": 2, "exploitability": 0.2, "mean_entropy_bits": pytest.approx(h / 2), "uniform_entropy_bits": 1.0},
    ]
    # a move legal only at some states: None (shown "–") elsewhere
    leduc_like = strategy_table([{"step": 0, "policy": {"a": {"Call": 0.5, "Raise": 0.5}, "b": {"Call": 0.2, "Fold": 0.8}}}])
    assert leduc_like.to_records()[0] == {"information_state": "a", "Call, step 0": 0.5, "Fold, step 0": None, "Raise, step 0": 0.5}
    analysis = analyse(run)
    assert analysis.strategy == table and analysis.strategy_entropy.column("step") == [0, 10]


def test_a_leduc_sized_table_shows_its_first_40_states_and_says_where_the_rest_are():
    from types import SimpleNamespace

    from multiagent_rl.analysis.game_report import strategy_section

    states = {f"[Private: {i:03d}]": {"Call": 0.5, "Raise": 0.5} for i in range(936)}
    tables = [{"step": 0, "policy": states}, {"step": 40, "policy": states}]
    anchor, label, html = strategy_section(SimpleNamespace(strategy=strategy_table(tables), strategy_entropy=strategy_entropy(tables)))
    assert (anchor, label) == ("strategy", "Strategy")
    assert "[Private: 039]" in html and "[Private: 040]" not in html and html.count("<tr>") == 1 + 2 + 1 + 40
    assert "The first 40 of 936 information states, sorted; 896 left out. The full tables are in strategy/*.json." in html
    assert strategy_section(SimpleNamespace(strategy=None, strategy_entropy=None)) is None  # no files: no section
