"""tictactoe (competitive game): PettingZoo's tic-tac-toe, the engine deciding turns,
legal moves and the winner. A model plays X (`player_1`, moving first) against a scripted
opponent that plays a random legal move (or another model: `opponent="model"`).

The model sees the board with the free cells numbered 1-9 and the legal moves, and
replies with a cell number. A reply that is no legal move loses the game (`invalid`:
"forfeit"; "penalty" and "retry" are the other rules). Rewards are the engine's: +1 win,
-1 loss, 0 draw, plus `legal_move_reward` (0.1) for each legal move: an untrained model
forfeits nearly every game, and outcomes that are all -1 teach nothing. Each task is a
seed; held-out games are seeds never seen in training.

Worked example of: wrapping a PettingZoo AEC environment (`aec_scenario`) with a text
renderer and move names, a scripted role (`Role(policy=...)`), and a zero-sum game whose
headline numbers are win, draw and loss rates.
"""

from __future__ import annotations

from multiagent_rl import ScenarioError
from multiagent_rl.games import aec_scenario, random_legal_move

CELLS = [str(i) for i in range(1, 10)]  # move name i + 1 is PettingZoo's action i (row-major)
PLAYERS = ["player_1", "player_2"]  # the engine's possible_agents: declaring builds no engine
OPPONENTS = ("random", "model")
SYSTEM = (
    "You play tic-tac-toe as {mark}. Three of your marks in a row, column or diagonal win. "
    "Reply with only the number of a free cell."
)


def render(env, agent: str) -> str:
    """The board from `agent`'s side: its marks, the opponent's, free cells by number."""
    planes = env.observe(agent)["observation"]  # (3, 3, 2): own marks, opponent's marks
    mine, theirs = ("X", "O") if agent == "player_1" else ("O", "X")
    rows = []
    for r in range(3):
        cells = []
        for c in range(3):
            cells.append(mine if planes[r, c, 0] else theirs if planes[r, c, 1] else CELLS[3 * r + c])
        rows.append(" | ".join(cells))
    return f"You are {mine}. Board:\n" + "\n".join(rows)


def make_scenario(opponent: str = "random", invalid: str = "forfeit", legal_move_reward: float = 0.1):
    from pettingzoo.classic import tictactoe_v3

    if opponent not in OPPONENTS:
        raise ScenarioError(f"tictactoe: opponent={opponent!r}; use one of {', '.join(OPPONENTS)}")
    scripted = {"player_2": lambda view, agent: random_legal_move(view, agent, CELLS)} if opponent == "random" else {}
    return aec_scenario(
        "tictactoe",
        tictactoe_v3.env,
        agents=PLAYERS,
        render=render,
        move_names=CELLS,
        scripted=scripted,
        system_prompts={"player_1": SYSTEM.format(mark="X"), "player_2": SYSTEM.format(mark="O")},
        invalid=invalid,
        legal_move_reward=legal_move_reward,
        max_new_tokens=4,
        max_turns=9,
        temperature=1.0,
        description="tic-tac-toe from PettingZoo: a model as X against a random legal-move player (or another model)",
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 8, "group_size": 4,
            "lr": 1e-3, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 100, "save_every": 10,
        },
    )
