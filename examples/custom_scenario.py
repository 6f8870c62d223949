"""Declare your own scenario: a proposer and a checker multiply two numbers.

Round 1: the proposer sees the problem and answers. Round 2: the checker sees the
problem *and* the proposer's message (the graph has one edge, proposer -> checker)
and gives the team's answer. Both agents get the same reward: 1 if it is right.

    python examples/custom_scenario.py                    # one scripted episode, no model
    load_scenario("examples/custom_scenario.py:checker")  # from Python
    multiagent-rl play examples/custom_scenario.py:checker
"""

import random

from multiagent_rl import (
    Episode,
    Role,
    Scenario,
    Task,
    answers_match,
    chain,
    parse_number_answer,
    team_reward,
)

AGENTS = ["proposer", "checker"]


def make_task(rng: random.Random) -> Task:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    # The key names the task; its hash puts it in the train or held-out split.
    return Task(key=f"{a}x{b}", prompt=f"What is {a} * {b}?", answer=str(a * b), meta={"a": a, "b": b})


def reward(task: Task, episode: Episode) -> dict[str, float]:
    # episode.team_answer is filled in first: by default the majority answer of the
    # last round, which here is the checker's alone.
    correct = answers_match(episode.team_answer, task.answer)
    return team_reward(float(correct), AGENTS)  # {"proposer": 1.0, "checker": 1.0} if right


checker = Scenario(
    name="checker",
    description="A proposer multiplies, a checker reviews and answers; team reward = correctness.",
    roles=[
        Role("proposer", "Multiply the two numbers. End with <answer>N</answer>."),
        Role("checker", "Check the proposer's product and fix it if wrong. End with <answer>N</answer>."),
    ],
    graph=chain(AGENTS),                   # proposer -> checker: only the checker receives messages
    schedule=[["proposer"], ["checker"]],  # who acts in round 1, round 2
    make_task=make_task,
    reward=reward,
    parse=parse_number_answer,             # text -> answer for each message
)


if __name__ == "__main__":
    env = checker.make_env(seed=0, render_mode="ansi")  # a PettingZoo ParallelEnv
    observations, infos = env.reset(seed=0)
    a, b = env.task.meta["a"], env.task.meta["b"]
    scripted = {  # what a model would write: the proposer slips, the checker catches it
        "proposer": f"{a} * {b} = {a * b + 1}. <answer>{a * b + 1}</answer>",
        "checker": f"Not quite: {a} * {b} = {a * b}. <answer>{a * b}</answer>",
    }
    while env.agents:
        acting = [agent for agent in env.agents if infos[agent]["acting"]]
        if acting == ["checker"]:
            print(f"--- what the checker sees ---\n{observations['checker']}\n")
        actions = {agent: scripted[agent] for agent in acting}  # idle agents' actions are ignored
        observations, rewards, terminations, truncations, infos = env.step(actions)
    print(f"--- transcript ---\n{env.render()}\n")
    print("rewards:", rewards)
