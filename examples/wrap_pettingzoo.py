"""Wrap a PettingZoo AEC game as a scenario: Connect Four, a model against a random player.

    python examples/wrap_pettingzoo.py                       # one game with the untrained model
    multiagent-rl train examples/wrap_pettingzoo.py:connect_four --out runs/c4
"""

from pettingzoo.classic import connect_four_v3

from multiagent_rl.games import aec_scenario, random_legal_move


def render(env, agent: str) -> str:
    """The board as text from `agent`'s side: X its discs, O the opponent's, columns 0-6."""
    planes = env.observe(agent)["observation"]  # (6 rows, 7 columns, 2): own discs, opponent's
    rows = ["".join("X" if planes[r, c, 0] else "O" if planes[r, c, 1] else "." for c in range(7)) for r in range(6)]
    return "You are X. Drop a disc in a column 0-6; four in a row wins.\n" + "\n".join(rows) + "\n0123456"


connect_four = aec_scenario(
    "connect_four", connect_four_v3.env, render=render,
    scripted={"player_1": random_legal_move},  # the engine's player_1 is plain Python
    invalid="forfeit", legal_move_reward=0.05, max_new_tokens=4,
)

if __name__ == "__main__":
    from multiagent_rl.backends.hf import HFBackend
    from multiagent_rl.models import load_model
    from multiagent_rl.rollout import rollout

    model, tokenizer = load_model("smollm2-135m-instruct")
    (episode,) = rollout(connect_four, HFBackend(model, tokenizer), [connect_four.sample_task(__import__("random").Random(0))],
                         adapters={"player_0": None}).episodes
    print("\n".join(f"{t.agent}: {t.message.text!r}{'' if t.valid else ' (invalid)'}" for t in episode.turns))
    print("winner:", episode.winner, "rewards:", episode.rewards)
