"""Take-away (one-pile Nim), written on the run-time hooks by hand: no engine, no wrapper.

A pile of stones; two players, `first` and `second`, take turns to take 1, 2 or 3 stones;
whoever takes the last stone wins. The player to move loses against perfect play exactly
when the pile is a multiple of 4, so a perfect reference player is two lines long.

    python examples/take_away.py                                  # one scripted game, no model
    multiagent-rl play examples/take_away.py:take_away            # the untrained model as `first`
    multiagent-rl train examples/take_away.py:take_away --out runs/nim
    multiagent-rl train examples/take_away.py:make_scenario --out runs/nim-self \
        --set scenario_options.opponent=model                     # self-play: a model in both seats

Worked example of: the hooks (`init_state`, `turn_order`, `observe`, `act` returning an
`Outcome`), a scripted opponent (`Role(policy=...)`), reference players for
`eval --against`, an illegal move that forfeits, and a per-move shaping term (`legal_move`)
that the `shaping:` settings can anneal away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from multiagent_rl import (
    EpisodeView,
    Outcome,
    Role,
    Scenario,
    ScenarioError,
    Task,
    complete,
    parse_number_answer,
)

PLAYERS = ["first", "second"]
MOVES = (1, 2, 3)
OPPONENTS = ("random", "perfect", "model")
SYSTEM = (
    "You play take-away as {agent}. Players take turns to take 1, 2 or 3 stones from a pile; "
    "whoever takes the last stone wins. Reply with only the number of stones you take."
)


@dataclass
class Pile:
    """One game's state: what `init_state` makes and the hooks read and change."""

    stones: int
    to_move: str = "first"
    dice: random.Random = field(default_factory=random.Random)  # the scripted opponent's, from the task's seed
    moves: list[tuple[str, int]] = field(default_factory=list)
    over: bool = False


def legal_moves(pile: Pile) -> list[int]:
    return [m for m in MOVES if m <= pile.stones]


def other(agent: str) -> str:
    return PLAYERS[1 - PLAYERS.index(agent)]


# ----- the hooks -------------------------------------------------------------------------------
def init_state(task: Task, rng: random.Random) -> Pile:
    """A fresh game per episode. The opponent's dice come from the task, so every sample of a
    task (a GRPO group) meets the same opponent moves for the same replies."""
    return Pile(stones=task.meta["stones"], dice=random.Random(task.meta["seed"]))


def turn_order(view: EpisodeView) -> list[str]:
    """Who acts now: the player to move, or nobody once the game is over (the episode ends)."""
    pile: Pile = view.state
    return [] if pile.over else [pile.to_move]


def observe(view: EpisodeView, agent: str) -> str:
    """What the player to move is shown: the pile, the last move, the legal moves."""
    pile: Pile = view.state
    last = f"{pile.moves[-1][0]} took {pile.moves[-1][1]}. " if pile.moves else ""
    moves = ", ".join(map(str, legal_moves(pile)))
    return f"{last}The pile has {pile.stones} stones. Legal moves: {moves}. How many do you take?"


def make_act(legal_move_reward: float):
    def act(view: EpisodeView, agent: str, text: str) -> Outcome:
        """Apply a reply: a legal move takes stones (and may end the game); anything else forfeits."""
        pile: Pile = view.state
        answer = parse_number_answer(text)  # "<answer>2</answer>", "I take 2", "2" -> "2"
        legal = legal_moves(pile)
        if answer not in {str(m) for m in legal}:  # the forfeit rule: an illegal reply loses the game
            pile.over = True
            return Outcome(valid=False, event={"agent": agent, "invalid": text[:100]}, done=True,
                           winner=other(agent), result={agent: -1.0, other(agent): 1.0})
        move = int(answer)
        pile.stones -= move
        pile.moves.append((agent, move))
        pile.to_move = other(agent)
        # Paid per legal move under its own term, so `shaping:` can anneal it and play figures leave it out.
        outcome = Outcome(reward=legal_move_reward, term="legal_move",
                          event={"agent": agent, "move": move, "left": pile.stones})
        if pile.stones == 0:  # the last stone: this player wins
            pile.over = True
            outcome.done, outcome.winner = True, agent
            outcome.result = {agent: 1.0, other(agent): -1.0}
        return outcome

    return act


# ----- scripted players -----------------------------------------------------------------------
def random_move(view: EpisodeView, agent: str) -> str:
    """A uniformly random legal move."""
    pile: Pile = view.state
    return str(pile.dice.choice(legal_moves(pile)))


def perfect_move(view: EpisodeView, agent: str) -> str:
    """Leave the opponent a multiple of 4 where possible (then it never loses); else take 1."""
    return str(view.state.stones % 4 or 1)


REFERENCE_PLAYERS = {"random": random_move, "perfect": perfect_move}  # for `eval --against NAME`


# ----- the scenario ---------------------------------------------------------------------------
def make_scenario(opponent: str = "random", min_stones: int = 5, max_stones: int = 20,
                  legal_move_reward: float = 0.1) -> Scenario:
    """A model plays `first`; `second` is a scripted player (`random`, `perfect`) or a model
    (`model`: self-play). Options are settable as `--set scenario_options.opponent=model`."""
    if opponent not in OPPONENTS:
        raise ScenarioError(f"take_away: opponent={opponent!r}; use one of {', '.join(OPPONENTS)}")
    if not 1 <= min_stones <= max_stones:
        raise ScenarioError(f"take_away: need 1 <= min_stones <= max_stones, got {min_stones}, {max_stones}")

    def make_task(rng: random.Random) -> Task:
        stones, seed = rng.randint(min_stones, max_stones), rng.randrange(2**31)
        # The key names the game (pile and opponent dice); its hash puts it in the train or held-out split.
        return Task(key=f"{stones}-{seed}", prompt="", meta={"stones": stones, "seed": seed})

    policy = REFERENCE_PLAYERS.get(opponent)  # None: a model plays `second`
    against = "self-play" if policy is None else f"a model against a {opponent} player"
    return Scenario(
        name="take_away",
        description=f"take-away (one-pile Nim): take 1-3 stones, the last stone wins; {against}",
        roles=[Role("first", SYSTEM.format(agent="first"), team="first"),
               Role("second", SYSTEM.format(agent="second"), team="second", policy=policy)],
        graph=complete(PLAYERS),  # the table; with `observe`, a player sees what observe says
        schedule=None,  # the game decides who moves: turn_order
        make_task=make_task,
        reward=lambda task, episode: dict.fromkeys(PLAYERS, 0.0),  # a decided game's reward is its result
        init_state=init_state,
        turn_order=turn_order,
        observe=observe,
        act=make_act(legal_move_reward),
        legal_moves=lambda view, agent: [str(m) for m in legal_moves(view.state)],  # the exact move policy's moves
        max_turns=max_stones,  # a game ends within one turn per stone
        team_answer=lambda episode: episode.winner,
        max_new_tokens=4,
        temperature=1.0,
        reference_players=REFERENCE_PLAYERS,
        train_defaults={"steps": 400, "time_budget_minutes": 15, "tasks_per_step": 8, "group_size": 4, "lr": 1e-3,
                        "eval_every": 0, "eval_episodes": 100, "save_every": 10},
    )


take_away = make_scenario()  # `examples/take_away.py:take_away`: the defaults, no options


if __name__ == "__main__":
    env = take_away.make_env(seed=0)  # a PettingZoo ParallelEnv
    observations, infos = env.reset(seed=0, options={"task": Task(key="demo", prompt="", meta={"stones": 9, "seed": 0})})
    while env.agents:
        print(observations["first"].rsplit("[user] ", 1)[-1])  # what `observe` showed it
        reply = str(env.view.state.stones % 4 or 1)  # `first` plays perfectly: 9 is a win for the player to move
        observations, rewards, terminations, truncations, infos = env.step({"first": reply})
    episode = env.episode()
    print("moves:", [(e["agent"], e["move"]) for e in episode.events])
    print("winner:", episode.winner, "returns:", {a: round(r, 2) for a, r in episode.returns().items()})
