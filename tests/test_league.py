"""The league's pure logic: pool, opponent sampling, ratings, tallies, resume, Wilson interval."""

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from multiagent_rl.league import PFSP_WINDOW, League, LeagueSettings, win_rate_interval


def make(seed=0, snapshots=("step-0", "step-10", "step-20"), **settings):
    league = League(LeagueSettings(mode="pool", **settings), seed=seed)
    for name in snapshots:
        league.add_snapshot(name)
    return league


@pytest.mark.parametrize("rule", ["uniform", "pfsp"])
def test_sampling_is_deterministic_under_a_seed(rule):
    draws = [make(seed=s, opponents=rule).sample_opponents(50) for s in (1, 1, 2)]
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_latest_is_always_the_newest():
    league = make(opponents="latest")
    assert league.sample_opponents(5) == ["step-20"] * 5
    league.add_snapshot("step-30")
    assert league.sample_opponents(3) == ["step-30"] * 3


def test_uniform_covers_the_pool():
    counts = Counter(make(opponents="uniform").sample_opponents(300))
    assert set(counts) == {"step-0", "step-10", "step-20"}
    assert min(counts.values()) > 60


def test_pfsp_prefers_the_opponent_never_beaten():
    league = make(snapshots=("step-0", "step-10"), opponents="pfsp")
    for _ in range(10):
        league.record("step-0", 1)  # always beaten
        league.record("step-10", 0)  # never beaten
    counts = Counter(league.sample_opponents(1000))
    assert counts["step-10"] > 20 * counts["step-0"]
    weights = league.pfsp_weights()
    assert weights[1] > 0.9 and weights[0] < 0.01


def test_pfsp_gives_unplayed_opponents_a_fair_chance():
    league = make(snapshots=("step-0", "step-10"), opponents="pfsp")
    for _ in range(10):
        league.record("step-0", 0)
    counts = Counter(league.sample_opponents(1000))
    assert counts["step-10"] > 100  # prior p = 0.5: weight 0.25 against ~0.91


def test_pfsp_follows_the_recent_games_not_a_snapshots_whole_life():
    league = make(snapshots=("step-0", "step-10"), opponents="pfsp")
    for _ in range(100):
        league.record("step-0", 1)  # beaten for long by older live policies ...
    for _ in range(PFSP_WINDOW):
        league.record("step-0", 0)  # ... and never by the current one
    assert league.pfsp_weights()[0] > 0.9  # over its whole life it would be p = 0.76, weight 0.06
    assert league.tallies["step-0"] == [100, 0, PFSP_WINDOW]  # the tallies still count every game
    league.record("step-0", 1)
    league.record("step-0", 0.5)
    assert league.recent["step-0"][-2:] == [1.0, 0.5] and len(league.recent["step-0"]) == PFSP_WINDOW
    resumed = League.from_state(league.settings, json.loads(json.dumps(league.state_dict())))
    assert resumed.pfsp_weights() == league.pfsp_weights()


def test_pool_limit_drops_oldest_non_initial_and_keeps_step_0():
    league = make(snapshots=("step-0", "step-10"), pool_size=3)
    assert league.add_snapshot("step-20") == []
    assert league.add_snapshot("step-30") == ["step-10"]
    assert league.add_snapshot("step-40") == ["step-20"]
    assert league.pool == ["step-0", "step-30", "step-40"]
    assert "step-10" not in league.ratings() and "step-10" not in league.tallies


def test_pool_limit_without_keep_initial_drops_step_0():
    league = make(snapshots=("step-0", "step-10"), pool_size=2, keep_initial=False)
    assert league.add_snapshot("step-20") == ["step-0"]
    assert league.pool == ["step-10", "step-20"]


def test_pool_size_one_with_keep_initial_keeps_step_0_alone():
    league = make(snapshots=("step-0",), pool_size=1)
    assert league.add_snapshot("step-10") == ["step-10"]
    assert league.pool == ["step-0"]


def test_ratings_follow_outcomes():
    league = make(snapshots=("step-0",))
    start = league.rating_details()["live"]["mu"]
    for _ in range(5):
        league.record("step-0", 1)
    after_wins = league.rating_details()
    assert after_wins["live"]["mu"] > start > after_wins["step-0"]["mu"]
    for _ in range(10):
        league.record("step-0", 0)
    assert league.rating_details()["live"]["mu"] < after_wins["live"]["mu"]
    assert set(league.ratings()) == {"live", "step-0"}
    details = league.rating_details()["live"]
    assert league.ratings()["live"] == pytest.approx(details["mu"])
    assert details["ordinal"] == pytest.approx(details["mu"] - 3 * details["sigma"])


def test_draw_between_equals_moves_mu_little_and_a_snapshot_starts_at_live():
    league = make(snapshots=("step-0",))
    league.record("step-0", 0.5)
    details = league.rating_details()
    assert details["live"]["mu"] == pytest.approx(25.0, abs=1e-6)
    assert details["live"]["sigma"] < 25.0 / 3
    league.record("step-0", 1)
    league.add_snapshot("step-10")
    assert league.rating_details()["step-10"] == league.rating_details()["live"]


def test_metrics_and_step_reset():
    league = make(snapshots=("step-0", "step-10"))
    league.record("step-0", 1)
    league.record("step-0", 0.5)
    league.record("step-10", 0)
    m = league.metrics()
    assert m["league/vs/step-0/win"] == 1 and m["league/vs/step-0/draw"] == 1
    assert m["league/vs/step-10/loss"] == 1 and m["league/vs/step-10/win"] == 0
    assert m["league/pool_size"] == 2
    assert {"league/rating/live", "league/rating/step-0", "league/rating/step-10"} <= set(m)
    league.reset_step()
    assert league.metrics()["league/vs/step-0/win"] == 0
    assert league.tallies["step-0"] == [1, 1, 0]


def test_ratings_off():
    league = make(snapshots=("step-0",), ratings=False)
    league.record("step-0", 1)
    assert league.ratings() == {} and not any("rating" in k for k in league.metrics())


@pytest.mark.parametrize("rule", ["uniform", "pfsp", "latest"])
def test_state_round_trip_matches_an_uninterrupted_league(rule):
    settings = dict(opponents=rule, pool_size=3)
    a, b = make(seed=7, **settings), make(seed=7, **settings)

    def play(league, first, last):
        seen = []
        for step in range(first, last):
            for i, opp in enumerate(league.sample_opponents(4)):
                league.record(opp, [0, 0.5, 1][(i + step) % 3])
                seen.append(opp)
            if step % 2:  # new snapshots push old ones out of the pool
                seen.extend(league.add_snapshot(f"step-{100 * step}"))
            seen.append(league.metrics())
            league.reset_step()
        return seen

    play(a, 0, 3)
    play(b, 0, 3)
    state = json.loads(json.dumps(b.state_dict()))
    restored = League.from_state(LeagueSettings(mode="pool", **settings), state)
    assert play(restored, 3, 8) == play(a, 3, 8)
    assert restored.rating_details() == a.rating_details()
    assert restored.state_dict() == a.state_dict()


def test_errors_are_clear():
    with pytest.raises(ValueError, match="empty pool"):
        League(LeagueSettings(), seed=0).sample_opponents(1)
    league = make(snapshots=("step-0",))
    with pytest.raises(ValueError, match="not in the pool"):
        league.record("step-99", 1)
    for bad in (2, -1, 0.3, True, "1", float("nan")):
        with pytest.raises(ValueError, match="live_score must be 0, 0.5 or 1"):
            league.record("step-0", bad)
    with pytest.raises(ValueError, match="taken"):
        league.add_snapshot("step-0")
    with pytest.raises(ValueError, match="taken"):
        league.add_snapshot("live")
    with pytest.raises(ValidationError):
        LeagueSettings(snapshot_every=0)
    with pytest.raises(ValidationError):
        LeagueSettings(mode="tournament")


def test_wilson_interval():
    low, high = win_rate_interval(8, 2)
    # p = 0.8, n = 10, z^2 = 3.8416: centre 0.99208 / 1.38416, half 1.96 * sqrt(0.025604) / 1.38416
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert win_rate_interval(0, 0) == (0.0, 1.0)
    assert win_rate_interval(5, 5)[0] == pytest.approx(1 - win_rate_interval(5, 5)[1])
    low, high = win_rate_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(3.8416 / 13.8416, abs=1e-9)
    with pytest.raises(ValueError, match=">= 0"):
        win_rate_interval(-1, 3)
