"""tictactoe (competitive game): PettingZoo's tic-tac-toe, the engine deciding turns,
legal moves and the winner. A model plays X (`player_1`, moving first) against a scripted
opponent that plays a random legal move (`opponent="random"`), plays perfectly
(`opponent="perfect"`: exact minimax, never loses) or is another model (`opponent="model"`).
`REFERENCE_PLAYERS` names the scripted players, so evaluations can measure a model against
a weak and a perfect reference.

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

from functools import cache

from multiagent_rl import ScenarioError
from multiagent_rl.games import aec_scenario, legal_moves, random_legal_move

CELLS = [str(i) for i in range(1, 10)]  # move name i + 1 is PettingZoo's action i (row-major)
PLAYERS = ["player_1", "player_2"]  # the engine's possible_agents: declaring builds no engine
OPPONENTS = ("random", "perfect", "model")
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


# ----- scripted reference players ------------------------------------------------------------
LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
MINE, THEIRS = 1, 2  # a board is 9 cells (action order) seen by the player to move: 0 free


@cache
def minimax_value(board: tuple[int, ...]) -> int:
    """The game's value for the player to move under perfect play: 0 a draw, a win counts
    1 + the cells still free when it happens (a quicker win is worth more, a slower loss
    costs less). The position is reached by a move of THEIRS, so only they can have a line."""
    if any(all(board[i] == THEIRS for i in line) for line in LINES):
        return -(1 + board.count(0))
    values = [-minimax_value(swapped(played(board, cell))) for cell in range(9) if board[cell] == 0]
    return max(values, default=0)


def played(board: tuple[int, ...], cell: int) -> tuple[int, ...]:
    return board[:cell] + (MINE,) + board[cell + 1 :]


def swapped(board: tuple[int, ...]) -> tuple[int, ...]:
    """The same position seen by the other player."""
    return tuple(THEIRS if c == MINE else MINE if c == THEIRS else 0 for c in board)


def best_cell(board: tuple[int, ...], legal: list[int] | None = None) -> int:
    """The action of a perfect player to move on `board`: the best minimax value, ties to the
    lowest cell (reproducible)."""
    legal = [c for c in range(9) if board[c] == 0] if legal is None else sorted(legal)
    return max(legal, key=lambda cell: (-minimax_value(swapped(played(board, cell))), -cell))


def board_of(env, agent: str) -> tuple[int, ...]:
    """The engine's board as `agent` sees it (what `render` shows), in action order."""
    planes = env.observe(agent)["observation"]  # (3, 3, 2): own marks, opponent's marks
    return tuple(MINE if planes[r, c, 0] else THEIRS if planes[r, c, 1] else 0 for r in range(3) for c in range(3))


def perfect_move(view, agent: str) -> str:
    """A scripted player that plays exact minimax: it never loses."""
    env = view.state.env
    return CELLS[best_cell(board_of(env, agent), legal_moves(env, agent))]


def random_move(view, agent: str) -> str:
    """A scripted player: a uniformly random legal cell, from the episode's rng."""
    return random_legal_move(view, agent, CELLS)


REFERENCE_PLAYERS = {"random": random_move, "perfect": perfect_move}  # scripted players by name


def make_scenario(opponent: str = "random", invalid: str = "forfeit", legal_move_reward: float = 0.1):
    from pettingzoo.classic import tictactoe_v3

    if opponent not in OPPONENTS:
        raise ScenarioError(f"tictactoe: opponent={opponent!r}; use one of {', '.join(OPPONENTS)}")
    scripted = {"player_2": REFERENCE_PLAYERS[opponent]} if opponent in REFERENCE_PLAYERS else {}
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
        description="tic-tac-toe from PettingZoo: a model as X against a random or a perfect player (or another model)",
        reference_players=REFERENCE_PLAYERS,
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 8, "group_size": 4,
            "lr": 1e-3, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 100, "save_every": 10,
        },
    )
