"""TeamEnv specifics: schedules, routing over per-round graphs, chat views, state,
render, reward timing, the end of an episode, and determinism."""

from __future__ import annotations

import random

import pytest

from multiagent_rl import (
    Role,
    Scenario,
    ScenarioError,
    Task,
    answers_match,
    from_edges,
    load_scenario,
    team_reward,
)
from multiagent_rl.env import TeamEnv

AGENTS = ["a", "b", "c", "d"]


def quartet(graph_calls: list[int] | None = None) -> Scenario:
    """a briefs b in full and c by answer only (round 0); b reports to d (round 1); d answers.

    c acts in round 1 but that round's graph gives it no out-edges: its message reaches nobody.
    """

    def graph(round_index: int):
        if graph_calls is not None:
            graph_calls.append(round_index)
        if round_index == 0:
            return from_edges([("a", "b"), ("a", "c", {"visibility": "answer"})], agents=AGENTS)
        return from_edges([("b", "d")], agents=AGENTS)

    def make_task(rng: random.Random) -> Task:
        n = rng.randint(0, 10**6)
        return Task(
            key=f"n{n}", prompt=f"Pass on {n}.", answer=str(n), private={"b": f"secret-{n}"}
        )

    def reward(task, episode):
        return team_reward(float(answers_match(episode.team_answer, task.answer)), AGENTS)

    return Scenario(
        name="quartet",
        description="test scenario",
        roles=[Role(name, f"You are {name}.") for name in AGENTS],
        graph=graph,
        schedule=[["a"], ["b", "c"], ["d"]],
        make_task=make_task,
        reward=reward,
    )


def chat_text(env: TeamEnv, agent: str) -> str:
    return "\n".join(m["content"] for m in env.chat(agent))


def run(env: TeamEnv, say) -> list[tuple]:
    """Play to the end with `say(agent, round)` for every live agent; return each step's output."""
    steps = []
    while env.agents:
        steps.append(env.step({a: say(a, env.round) for a in env.agents}))
    return steps


# ----- schedule and routing -------------------------------------------------------------
def test_only_scheduled_agents_actions_count():
    env = quartet().make_env(seed=0)
    _, infos = env.reset()
    assert {a: infos[a]["acting"] for a in AGENTS} == {
        "a": True,
        "b": False,
        "c": False,
        "d": False,
    }
    env.step({a: f"{a}-round-0" for a in AGENTS})
    assert [(t.agent, t.round) for t in env.turns] == [("a", 0)]
    env.step({"a": "a-round-1", "b": "b-round-1"})  # c is scheduled but silent
    assert [(t.agent, t.round) for t in env.turns] == [("a", 0), ("b", 1), ("c", 1)]
    assert env.turns[-1].message.text == ""
    assert "a-round-1" not in env.state() and "b-round-0" not in env.state()


def test_inbox_routing_follows_the_rounds_graph():
    env = quartet().make_env(seed=0)
    env.reset()
    env.step({"a": "I think it is <answer>17</answer>"})
    assert env.turns[0].message.receivers == ["b", "c"]
    assert env.turns[0].message.visibility == {"b": "full", "c": "answer"}
    assert "Message from a (round 1): I think it is <answer>17</answer>" in env.observe("b")
    assert "Message from a (round 1): final answer: 17" in env.observe("c")
    assert "I think it is" not in env.observe("c")
    assert "Message from" not in env.observe("d")

    env.step({"b": "b relays 17", "c": "c shouts 99"})
    by_agent = {t.agent: t.message for t in env.turns}
    assert by_agent["b"].receivers == ["d"]  # round 1's graph, not round 0's
    assert by_agent["c"].receivers == []
    assert "b relays 17" in chat_text(env, "d")
    for text in ("I think it is", "final answer: 17", "c shouts 99"):
        assert text not in chat_text(env, "d")
    assert "c shouts 99" not in chat_text(env, "a") + chat_text(env, "b")


def test_answer_visibility_without_a_parsed_answer():
    env = quartet().make_env(seed=0)
    env.reset()
    env.step({"a": "no number here"})
    assert "Message from a (round 1): final answer: (none)" in env.observe("c")


def test_per_round_graph_function_is_asked_for_each_round():
    calls: list[int] = []
    scenario = quartet(calls)
    calls.clear()  # validation already asked for every round
    env = scenario.make_env(seed=0)
    env.reset()
    run(env, lambda agent, r: f"{agent} in round {r}")
    assert calls == [0, 1, 2]
    assert scenario.graph_at(0).edges == [("a", "b"), ("a", "c")]
    assert scenario.graph_at(2).edges == [("b", "d")]


def test_debate_complete_graph_routes_both_ways():
    env = load_scenario("debate").make_env(seed=0)
    env.reset()
    env.step({"solver_a": "alpha says 3", "solver_b": "beta says 4"})
    assert "Message from solver_b (round 1): beta says 4" in env.observe("solver_a")
    assert "Message from solver_a (round 1): alpha says 3" in env.observe("solver_b")
    assert "alpha says 3" in env.observe("solver_a")  # its own turn, as an assistant message


# ----- what the env exposes -----------------------------------------------------------
def test_state_holds_every_message():
    env = quartet().make_env(seed=0)
    env.reset()
    run(env, lambda agent, r: f"<{agent} said something in round {r}>")
    state = env.state()
    assert env.task.prompt in state
    assert len(env.turns) == 4
    for turn in env.turns:
        assert turn.message.text in state
    assert "[round 2] c -> (nobody): <c said something in round 1>" in state
    assert "[round 1] a -> b, c: <a said something in round 0>" in state


def test_render_ansi():
    env = quartet().make_env(seed=0, render_mode="ansi")
    env.reset()
    env.step({"a": "hello"})
    assert env.render() == env.state()
    run(env, lambda agent, r: f"<answer>{env.task.answer}</answer>")
    text = env.render()
    assert isinstance(text, str)
    assert f"team answer: {env.task.answer}" in text and "rewards: {" in text

    quiet = quartet().make_env(seed=0)
    quiet.reset()
    assert quiet.render() is None
    with pytest.raises(ScenarioError, match="render_mode"):
        quartet().make_env(render_mode="human")


def assert_chat_shape(chat: list[dict[str, str]], system_prompt: str) -> None:
    assert chat[0] == {"role": "system", "content": system_prompt}
    roles = [m["role"] for m in chat[1:]]
    assert roles[0] == "user" and roles[-1] == "user"
    assert all(x != y for x, y in zip(roles, roles[1:], strict=False)), roles
    assert set(roles) <= {"user", "assistant"}


def test_chat_structure_and_private_views():
    scenario = quartet()
    env = scenario.make_env(seed=0)
    env.reset()
    secret = env.task.private["b"]
    while env.agents:
        for agent in AGENTS:
            chat = env.chat(agent)
            assert_chat_shape(chat, scenario.role(agent).system_prompt)
            assert chat[1]["content"].startswith(f"Task: {env.task.prompt}")
            assert (secret in chat_text(env, agent)) == (agent == "b")
            assert (secret in env.observe(agent)) == (agent == "b")
            own = [t.message.text for t in env.turns if t.agent == agent]
            assert [m["content"] for m in chat if m["role"] == "assistant"] == own
        env.step({a: f"{a}: reply in round {env.round}" for a in env.acting_agents()})
    assert f"Private to b: {secret}" in env.state()  # the global view (for critics) holds private views


def test_debate_chat_alternates_over_rounds():
    scenario = load_scenario("debate")
    env = scenario.make_env(seed=0)
    env.reset()
    env.step({"solver_a": "<answer>5</answer>", "solver_b": "<answer>6</answer>"})
    chat = env.chat("solver_a")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[2]["content"] == "<answer>5</answer>"
    assert "Message from solver_b (round 1): <answer>6</answer>" in chat[3]["content"]
    assert "Task:" not in chat[3]["content"]  # the task is stated once


# ----- rewards and the end of an episode ------------------------------------------------
@pytest.mark.parametrize(
    "scenario", [quartet(), load_scenario("debate")], ids=["quartet", "debate"]
)
def test_rewards_only_on_the_last_step_and_everyone_terminates_together(scenario):
    env = scenario.make_env(seed=0)
    env.reset()
    steps = run(env, lambda agent, r: f"<answer>{env.task.answer}</answer>")
    assert len(steps) == scenario.num_rounds
    for _, rewards, terms, truncs, _ in steps[:-1]:
        assert rewards == dict.fromkeys(scenario.agents, 0.0)
        assert terms == dict.fromkeys(scenario.agents, False)
        assert truncs == dict.fromkeys(scenario.agents, False)
    obs, rewards, terms, truncs, infos = steps[-1]
    assert rewards == {a: sum(e.value for e in env.final if e.agent == a) for a in scenario.agents} and set(rewards) == set(scenario.agents)
    assert max(rewards.values()) > 0.0
    assert terms == dict.fromkeys(scenario.agents, True)
    assert truncs == dict.fromkeys(scenario.agents, False)
    assert set(obs) == set(infos) == set(scenario.agents)
    assert env.agents == []
    assert env.episode().rewards == rewards


def test_step_after_the_end_raises_until_reset():
    env = quartet().make_env(seed=0)
    with pytest.raises(ScenarioError, match="reset"):
        env.step({"a": "too early"})
    env.reset()
    run(env, lambda agent, r: "x")
    with pytest.raises(ScenarioError, match="finished episode"):
        env.step({"a": "again"})
    env.reset()
    assert env.agents == AGENTS and env.turns == []
    env.step({"a": "fine again"})


# ----- determinism -----------------------------------------------------------------------
def transcript(env: TeamEnv, seed: int | None) -> tuple:
    obs, _ = env.reset(seed=seed)
    steps = run(env, lambda agent, r: f"{agent} {r} <answer>{r}</answer>")
    return env.task, env.episode_id, obs, steps, env.state()


@pytest.mark.parametrize(
    "scenario", [quartet(), load_scenario("debate")], ids=["quartet", "debate"]
)
def test_determinism_under_a_seed(scenario):
    one, two = scenario.make_env(seed=7), scenario.make_env(seed=7)
    # The constructor's seed fixes the whole stream of episodes...
    assert [transcript(one, None) for _ in range(3)] == [transcript(two, None) for _ in range(3)]
    # ...and reset(seed=...) restarts it, whatever came before.
    assert transcript(one, 3) == transcript(scenario.make_env(), 3)
    tasks = {transcript(one, seed)[0].key for seed in range(5)}
    assert len(tasks) > 1


def test_fixed_task_and_task_option():
    scenario = quartet()
    task = Task(key="fixed", prompt="Pass on 5.", answer="5")
    env = scenario.make_env(seed=0, task=task)
    env.reset()
    assert env.task == task
    other = Task(key="other", prompt="Pass on 6.", answer="6")
    env.reset(options={"task": other})
    assert env.task == other
    env.reset()
    assert env.task == task
