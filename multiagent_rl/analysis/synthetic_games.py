"""A synthetic self-play game run folder, for trying the report's game sections and for tests.

It imitates a two-player betting game trained in a league: early on both players pick Pass
or Bet at random and games are often cut off; later player_0 bets and wins more, the live
policy's rating climbs past its frozen snapshots, exploitability falls and the strategy
tables (Kuhn poker's 12 information states) go from uniform to betting on the best card.
The metrics use the keys the training loop writes (``league/rating/<name>``,
``league/vs/<opponent>/win``..., ``eval/exploitability``), the strategy tables its
``strategy/step-NNNNNN.json``. Nothing here is a real model's output.

>>> write_synthetic_game_run("/tmp/fake-game", steps=20)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..records import Episode, EpisodeLog, Message, RewardEntry, Task, Turn

PLAYERS = ["player_0", "player_1"]
MOVES = ["Pass", "Bet"]
# Kuhn poker's information states as OpenSpiel writes them: the card (0 Jack, 1 Queen, 2 King), the moves so far
INFO_STATES = [f"{card}{moves}" for card in range(3) for moves in ("", "p", "b", "pb")]


def synthetic_game_episode(rng: random.Random, step: int, skill: float, split: str = "train") -> Episode:
    """One game whose player_0 bets and wins more as `skill` in [0, 1] grows."""
    seed = rng.randrange(2**31)
    turns, events = [], []
    order = ["player_0", "player_1"] + (["player_0"] if rng.random() < 0.4 else [])
    for i, agent in enumerate(order):
        bet = rng.random() < (0.5 + 0.4 * skill if agent == "player_0" else 0.5 - 0.3 * skill)
        move = int(bet)
        text = MOVES[move]
        turns.append(Turn(agent=agent, round=i, adapter="shared", completion_tokens=2,
                          message=Message(sender=agent, receivers=[p for p in PLAYERS if p != agent], round=i, text=text)))
        events.append({"step": i, "agent": agent, "move": move, "name": text})
    draw = rng.random()
    if draw < 0.15 * (1 - skill):
        winner = None  # cut off at the turn limit
    elif draw < 0.25:
        winner = "draw"
    else:
        winner = "player_0" if rng.random() < 0.45 + 0.4 * skill else "player_1"
    result = {p: 0.0 if winner in (None, "draw") else (1.0 if p == winner else -1.0) for p in PLAYERS}
    return Episode(
        episode_id=f"{split}-{step}-{seed:010x}", scenario="synthetic_game",
        task=Task(key=f"seed-{seed}", prompt="", meta={"seed": seed}), turns=turns,
        final=[RewardEntry(agent=p, value=v, term="result") for p, v in result.items()],
        teams={p: p for p in PLAYERS}, team_answer=winner, winner=winner, events=events, split=split, step=step,
    )


def synthetic_strategy(step: int, skill: float) -> dict:
    """A strategy table as the training loop writes it: uniform at `skill` 0, then betting more
    on a King and less on a Jack as `skill` grows."""
    policy = {}
    for state in INFO_STATES:
        bet = round(0.5 + 0.45 * skill * (int(state[0]) - 1), 4)
        policy[state] = {"Bet": bet, "Pass": round(1 - bet, 4)}
    return {"step": step, "exploitability": _exploitability(skill), "policy": policy}


def _exploitability(skill: float) -> float:
    return round(0.5 * (1 - skill) + 0.05, 4)


def _league_line(rng: random.Random, step: int, skill: float, pool: list[str], ratings: dict[str, float]) -> dict:
    line: dict = {"step": step}
    for opponent in [*pool, "base"]:
        beaten = 0.9 if opponent == "base" else min(0.9, 0.5 + 0.5 * skill - 0.02 * len(pool))
        games = [rng.random() for _ in range(4)]
        wins = sum(g < beaten for g in games)
        draws = sum(beaten <= g < beaten + 0.05 for g in games)
        line |= {f"league/vs/{opponent}/win": float(wins), f"league/vs/{opponent}/draw": float(draws),
                 f"league/vs/{opponent}/loss": float(len(games) - wins - draws)}
    ratings["live"] += 0.4 * skill + rng.uniform(-0.1, 0.1)
    line |= {f"league/rating/{name}": value for name, value in ratings.items()}
    line["league/pool_size"] = float(len(pool))
    return line


def write_synthetic_game_run(
    path: str | Path,
    steps: int = 20,
    episodes_per_step: int = 8,
    snapshot_every: int = 5,
    pool_size: int = 3,
    eval_every: int = 5,
    eval_episodes: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``path/episodes/step-NNNNNN.msgpack``, ``metrics.jsonl`` (train lines with the
    league's keys, eval lines with exploitability) and ``strategy/step-NNNNNN.json`` (at step 0
    and each evaluation) for a fake run; returns the run folder."""
    run = Path(path)
    rng = random.Random(seed)
    pool: list[str] = []
    ratings = {"live": 0.0}
    lines = []
    for step in range(0, steps + 1):
        skill = step / max(1, steps)
        if step % snapshot_every == 0:  # freeze the live policy; keep step-0 and the newest others
            pool.append(f"step-{step}")
            ratings[pool[-1]] = ratings["live"]
            if len(pool) > pool_size:
                ratings.pop(pool.pop(1))
        if step == 0 or (eval_every and step % eval_every == 0):
            strategy = run / "strategy" / f"step-{step:06d}.json"
            strategy.parent.mkdir(parents=True, exist_ok=True)
            strategy.write_text(json.dumps(synthetic_strategy(step, skill), indent=1), encoding="utf-8")
        if step == 0:
            continue
        train = [synthetic_game_episode(rng, step, skill) for _ in range(episodes_per_step)]
        episodes = list(train)
        line = {"reward/team_mean": sum(e.team_reward() for e in train) / len(train)}
        lines.append(json.dumps(_league_line(rng, step, skill, pool, ratings) | line))
        if eval_every and step % eval_every == 0:
            held_out = [synthetic_game_episode(rng, step, skill, "eval") for _ in range(eval_episodes)]
            episodes += held_out
            lines.append(json.dumps({"step": step, "eval/team_reward_mean": sum(e.team_reward() for e in held_out) / len(held_out),
                                     "eval/exploitability": _exploitability(skill)}))
        EpisodeLog(run / "episodes" / f"step-{step:06d}.msgpack", fsync=False).extend(episodes)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run
