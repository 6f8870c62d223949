"""Episodes the environment drives: turn order decided at run time, early endings and
truncation, per-turn rewards reaching the trainer's samples, scripted roles (never
generated, never trained), the trainable-turn mask, invalid moves, one backend call per
turn step; and the PettingZoo tic-tac-toe wrapper against the bare engine."""

from __future__ import annotations

import random

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from multiagent_rl import Role, Scenario, ScenarioError, Task, complete
from multiagent_rl.hooks import Outcome
from multiagent_rl.rollout import rollout

AGENTS = ["alice", "bob"]


class Countdown:
    """A tiny engine: a counter the agents take turns lowering; who moves next is whoever did
    not move last, unless a reply says "again"; the game ends at 0."""

    def __init__(self, start: int):
        self.left = start
        self.last: str | None = None


def countdown(max_turns: int = 6, scripted_bob: bool = False, **more) -> Scenario:
    def make_task(rng: random.Random) -> Task:
        n = rng.randint(1, 4)
        return Task(key=f"c{n}-{rng.randint(0, 10**6)}", prompt="", meta={"start": n})

    def turn_order(view):
        state = view.state
        if state.left <= 0:
            return []
        if state.last is None:
            return ["alice"]
        again = view.turns[-1].message.text.strip() == "again"
        return [state.last] if again else [a for a in AGENTS if a != state.last]

    def act(view, agent, text):
        state = view.state
        state.last = agent
        if text.strip() == "bad":
            return Outcome(reward=-0.5, valid=False, trainable=False, event={"bad": agent})
        state.left -= 1
        return Outcome(reward=0.1, event={"left": state.left}, done=state.left <= 0)

    roles = [Role("alice", "Count."), Role("bob", "Count.", policy=(lambda view, agent: "tick") if scripted_bob else None)]
    return Scenario(
        name="countdown", roles=roles, graph=complete(AGENTS), schedule=None, make_task=make_task,
        reward=lambda task, episode: {a: 1.0 if a == episode.turns[-1].agent else 0.0 for a in AGENTS},
        turn_order=turn_order, init_state=lambda task, rng: Countdown(task.meta["start"]),
        observe=lambda view, agent: f"{view.state.left} left", act=act, max_turns=max_turns, max_new_tokens=2,
        **more,
    )


def play(scenario, replies, seed=0, start=None):
    env = scenario.make_env(seed=seed)
    task = Task(key="t", prompt="", meta={"start": start}) if start is not None else None
    env.reset(seed=seed, options={"task": task} if task else None)
    steps = []
    for reply in replies:
        if not env.agents:
            break
        acting = env.model_agents()
        steps.append((list(env.acting_agents()), env.step({a: reply for a in acting})))
    return env, steps


def test_turn_order_is_decided_at_run_time_and_the_episode_ends_early():
    env, steps = play(countdown(), ["go", "again", "go", "go", "go"], start=3)
    assert [t.agent for t in env.turns] == ["alice", "bob", "bob"]  # "again": bob twice; 0 left after 3
    assert not env.agents
    _, rewards, terms, truncs, _ = steps[-1][1]
    assert all(terms.values()) and not any(truncs.values())
    episode = env.episode()
    assert episode.rewards == {"alice": 0.0, "bob": 1.0} and not episode.truncated
    assert [e["left"] for e in episode.events] == [2, 1, 0]  # engine events kept in the record
    assert [t.observation for t in episode.turns] == ["3 left", "2 left", "1 left"]
    assert len(steps) == 3


def test_max_turns_truncates():
    env, steps = play(countdown(max_turns=2), ["again"] * 5, start=4)
    assert len(env.turns) == 2 and not env.agents
    _, _, terms, truncs, _ = steps[-1][1]
    assert all(truncs.values()) and not any(terms.values())
    assert env.episode().truncated


def test_per_turn_rewards_invalid_moves_and_the_mask_are_on_the_turns():
    env, steps = play(countdown(), ["bad", "go", "go"], start=2)
    turns = env.episode().turns
    assert (turns[0].valid, turns[0].trainable, turns[0].reward) == (False, False, -0.5)
    assert (turns[1].valid, turns[1].trainable, turns[1].reward) == (True, True, 0.1)
    assert steps[0][1][1]["alice"] == pytest.approx(-0.5)  # the step's PettingZoo reward
    episode = env.episode()
    assert episode.returns()["alice"] == pytest.approx(episode.rewards["alice"] - 0.5 + 0.1)


def test_scripted_roles_act_inside_step_and_never_reach_the_backend(single_thread):
    from multiagent_rl.backends.hf import HFBackend
    from multiagent_rl.models import load_model

    scenario = countdown(scripted_bob=True)
    assert scenario.model_agents == ["alice"]
    model, tokenizer = load_model("tiny")
    backend = HFBackend(model, tokenizer)
    seen = []
    original = backend.generate

    def recording(requests, seed=None):
        seen.extend(r.tag[1] for r in requests)
        return original(requests, seed=seed)

    backend.generate = recording
    tasks = [Task(key=f"t{n}", prompt="", meta={"start": n}) for n in (1, 2, 4)]
    batch = rollout(scenario, backend, tasks, group_size=2, adapters={"alice": None}, seed=1)
    assert set(seen) == {"alice"}
    assert all(s.agent == "alice" for s in batch.samples)
    bob_turns = [t for ep in batch.episodes for t in ep.turns if t.agent == "bob"]
    assert bob_turns and all(t.scripted and not t.trainable and t.message.text == "tick" for t in bob_turns)
    # one backend call per model turn step: the longest episode's count, no more
    longest = max(sum(t.agent == "alice" for t in ep.turns) for ep in batch.episodes)
    assert batch.backend_calls == longest
    assert min(len(ep.turns) for ep in batch.episodes) < max(len(ep.turns) for ep in batch.episodes)


def test_per_turn_rewards_and_the_mask_reach_the_trainers_samples(single_thread, tmp_path):
    from multiagent_rl.config import load_config
    from trainers.loop import Run

    scenario = countdown(scripted_bob=True)
    plain = scenario.act

    def act(view, agent, text):  # every other model turn is not to train, each with its own reward
        outcome = plain(view, agent, text)
        if agent == "alice":
            outcome.reward, outcome.trainable = 0.25 * (view.step + 1), view.step != 2
        return outcome

    scenario.act = act
    config = load_config(None, ["model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2", "group_size=2",
                                "eval_episodes=2", "lora.rank=4"])
    run = Run(config, tmp_path, scenario=scenario)
    tasks = [Task(key=f"t{n}", prompt="", meta={"start": n}) for n in (3, 4)]  # alice moves at steps 0 and 2
    batch = rollout(scenario, run.backend, tasks, group_size=2, adapters=run.agent_adapters, seed=3)
    for s in batch.samples:
        turn = batch.episodes[s.episode].turns[s.turn]
        assert turn.agent == s.agent and not turn.scripted
        assert s.reward == turn.reward and s.trainable == turn.trainable
    assert {s.trainable for s in batch.samples} == {True, False}
    assert len({s.reward for s in batch.samples}) > 1
    samples, _ = run.trainer.make_samples(batch)
    assert len(samples) == sum(s.trainable for s in batch.samples) < len(batch.samples)
    metrics = run.train_step(1).metrics()
    assert 0 < metrics["turns/untrainable_fraction"] < 1 and metrics["turns/scripted_fraction"] > 0


def test_a_turn_order_needs_max_turns_and_not_a_schedule():
    with pytest.raises(ScenarioError, match="needs max_turns"):
        countdown(max_turns=None)
    with pytest.raises(ScenarioError, match="not both"):
        Scenario(name="x", roles=[Role(a, "s") for a in AGENTS], graph=complete(AGENTS), schedule=[AGENTS],
                 make_task=lambda rng: Task(key="k", prompt=""), reward=lambda t, e: {}, turn_order=lambda v: [],
                 max_turns=3)


def test_a_hook_that_fails_marks_the_episode_failed_when_contained():
    def broken(view, agent, text):
        raise RuntimeError("engine exploded")

    scenario = countdown()
    scenario.act = broken
    env = scenario.make_env(seed=0, contain_failures=True)
    env.reset(seed=0)
    env.step({"alice": "go"})
    assert not env.agents and "engine exploded" in env.episode().failure


def test_the_countdown_env_passes_the_pettingzoo_harness():
    parallel_api_test(countdown().make_env(seed=0), num_cycles=30)
    parallel_seed_test(lambda: countdown().make_env(seed=0), num_cycles=30)


# ----- tic-tac-toe from PettingZoo ------------------------------------------------------------
def tictactoe(**options):
    from multiagent_rl import load_scenario

    return load_scenario("scenarios/tictactoe.py:make_scenario", **options)


def test_tictactoe_passes_the_pettingzoo_harness():
    parallel_api_test(tictactoe().make_env(seed=0), num_cycles=50)
    parallel_seed_test(lambda: tictactoe().make_env(seed=0), num_cycles=50)


@pytest.mark.parametrize("invalid", ["forfeit", "penalty", "retry"])
def test_200_random_text_games_give_the_bare_engines_outcomes(invalid):
    from pettingzoo.classic import tictactoe_v3

    scenario = tictactoe(opponent="model", invalid=invalid)
    rng = random.Random(7)
    for game in range(200):
        env = scenario.make_env(seed=game)
        env.reset(seed=game)
        while env.agents:
            (agent,) = env.model_agents()
            reply = rng.choice([str(rng.randint(0, 12)), "cell " + str(rng.randint(1, 9)), "no idea", "", "5 or 6"])
            env.step({agent: reply})
        episode = env.episode()
        moves = [e["move"] for e in episode.events if "move" in e]
        bare = tictactoe_v3.env()
        bare.reset(seed=int(episode.task.meta["seed"]))
        totals = dict.fromkeys(bare.possible_agents, 0.0)
        for move in moves:
            bare.step(move)
            for a, r in bare.rewards.items():
                totals[a] += r
        forfeit = any(e.get("forfeit") for e in episode.events)
        if forfeit:
            loser = next(e["agent"] for e in episode.events if e.get("forfeit"))
            assert episode.rewards[loser] == -1.0 and not all(bare.terminations.values())
        else:
            assert all(bare.terminations.values()), (game, moves)
            assert episode.rewards == totals
        expected = "draw" if len(set(episode.rewards.values())) == 1 else max(episode.rewards, key=episode.rewards.get)
        assert episode.winner == expected
        assert all(t.valid or invalid != "forfeit" or t is episode.turns[-1] for t in episode.turns)


def test_negotiation_ends_when_an_offer_is_accepted():
    from multiagent_rl import load_scenario

    scenario = load_scenario("scenarios/negotiation.py:make_scenario", format_bonus=0.0)
    env = scenario.make_env(seed=0)
    env.reset(seed=0)
    cost, value = env.task.meta["cost"], env.task.meta["value"]
    env.step({"red_negotiator": "8"})
    assert env.agents  # an offer alone is no deal
    env.step({"blue_negotiator": "Accept."})
    assert not env.agents and len(env.turns) == 2  # 3 turns scheduled, 2 taken
    episode = env.episode()
    assert episode.team_answer == "deal at 8"
    assert episode.rewards == pytest.approx({"red_negotiator": (8 - cost) / 10, "blue_negotiator": (value - 8) / 10})
    assert episode.events == [{"step": 1, "agent": "blue_negotiator", "deal": 8, "by": "blue"}]


def test_a_scenario_file_imports_the_files_beside_it(tmp_path):
    from multiagent_rl import load_scenario

    (tmp_path / "rules_helper.py").write_text("AGENTS = ['a', 'b']\n")
    (tmp_path / "game.py").write_text(
        "from rules_helper import AGENTS\n"
        "from multiagent_rl import Role, Scenario, Task, complete, team_reward\n"
        "game = Scenario(name='game', roles=[Role(a, 'Play.') for a in AGENTS], graph=complete(AGENTS),\n"
        "                schedule=[AGENTS], make_task=lambda rng: Task(key=str(rng.random()), prompt='p'),\n"
        "                reward=lambda task, ep: team_reward(0.0, AGENTS))\n"
    )
    assert load_scenario(f"{tmp_path}/game.py:game").agents == ["a", "b"]


def test_a_forfeit_before_the_scripted_opponent_moves_still_scores_the_model_side():
    scenario = tictactoe()
    env = scenario.make_env(seed=0)
    env.reset(seed=0)
    env.step({"player_1": "no move"})
    episode = env.episode()
    assert episode.scripted == ["player_2"] and [t.agent for t in episode.turns] == ["player_1"]
    assert episode.team_reward() == -1.0 and episode.winner == "player_2"


def test_the_readme_connect_four_wrapper_plays_and_passes_the_harness():
    from multiagent_rl import load_scenario

    scenario = load_scenario("examples/wrap_pettingzoo.py:connect_four")
    assert scenario.model_agents == ["player_0"]
    parallel_api_test(scenario.make_env(seed=0), num_cycles=40)
    env = scenario.make_env(seed=1)
    env.reset(seed=1)
    rng = random.Random(0)
    while env.agents:
        env.step({"player_0": str(rng.randint(0, 6))})  # legal until a column fills up
    episode = env.episode()
    assert episode.winner is not None and sum(not t.scripted for t in episode.turns) >= 4


def test_the_analysis_summary_reports_a_games_win_draw_loss_and_invalid_moves():
    from multiagent_rl.analysis.summary import game_outcomes

    scenario = tictactoe()
    episodes = []
    for step, reply in [(0, "no move"), (0, "no move"), (5, "1"), (5, "no move")]:
        env = scenario.make_env(seed=0, split="eval")
        env.reset(seed=0)
        replies = iter(["1", "2", "3", "4", "5", "6", "7", "8", "9"] if reply == "1" else [reply])
        while env.agents:
            legal = env.chat("player_1")[-1]["content"].split("Legal moves: ")[1].split("\n")[0].split(", ")
            move = next(replies, legal[0])
            env.step({"player_1": move if move in legal or reply != "1" else legal[0]})
        episodes.append(env.episode(step=step))
    out = game_outcomes(episodes)
    wins_late = sum(e.winner == "player_1" for e in episodes[2:])
    assert out["games: win / draw / loss of the model side, eval step 0 → 5"].startswith("0% / 0% / 100% → ")
    assert f"→ {50 * wins_late:.0f}%" in out["games: win / draw / loss of the model side, eval step 0 → 5"]
    assert out["games: invalid moves, eval step 0 → 5"].startswith("100% → ")


def decided_by(result):
    """A one-move game whose move decides it with `result` (the reward must not be called)."""
    def reward(task, episode):
        raise AssertionError("a decided game's reward is its result; the reward function must not run")

    return Scenario(
        name="one_move", roles=[Role("alice", "Move."), Role("bob", "Move.")], graph=complete(AGENTS), schedule=None,
        make_task=lambda rng: Task(key="t", prompt=""), reward=reward, turn_order=lambda view: ["alice"],
        init_state=lambda task, rng: None, observe=lambda view, agent: "move", max_turns=2, max_new_tokens=2,
        act=lambda view, agent, text: Outcome(reward=0.1, result=result, winner="alice", done=True),
    )


def test_a_games_result_is_written_once_as_the_final_ledger_lines():
    env = decided_by({"alice": 1.0, "bob": -1.0}).make_env(seed=0, contain_failures=True)
    env.reset(seed=0)
    env.advance({"alice": "x"})
    episode = env.episode()
    assert episode.failure is None and episode.winner == "alice"
    assert [(e.agent, e.value, e.term) for e in episode.final] == [("alice", 1.0, "result"), ("bob", -1.0, "result")]
    assert episode.returns() == {"alice": pytest.approx(1.1), "bob": -1.0}  # the turn's shaping line plus the result


@pytest.mark.parametrize("result", [{"alice": float("nan")}, {"carol": 1.0}, [1.0, -1.0]])
def test_a_bad_result_fails_the_episode_with_a_message(result):
    env = decided_by(result).make_env(seed=0, contain_failures=True)
    env.reset(seed=0)
    env.advance({"alice": "x"})
    assert "result" in env.episode().failure and env.episode().final == []
