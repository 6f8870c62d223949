"""Every installed scenario against the same checks: the PettingZoo harness, hostile
actions, episode records, task splits, and scripted perfect / wrong teams; then the
scenario-specific rules (private views, signalling orders); negotiation's are in
test_negotiation.py."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from multiagent_rl import (
    Episode,
    ScenarioError,
    Task,
    bare_number_replies,
    list_scenarios,
    load_scenario,
)
from multiagent_rl.env import TeamEnv
from multiagent_rl.records import encode_frame, read_episodes

BUILT_IN = ["debate", "division_of_labour", "negotiation", "signalling"]
VARIANTS = [
    ("division_of_labour", {"planner": True, "shared_workers": True, "workers_see_parts": False}),
    ("division_of_labour", {"share": "answer"}),
    ("debate", {"solvers": 3, "share": "answer"}),
    ("negotiation", {"team_size": 2, "mode": "zero_sum"}),
    ("negotiation", {"turns": 4}),
    ("signalling", {"K": 5, "message_tokens": 4}),
    ("signalling", {"channel": "symbols"}),
    ("division_of_labour", {"solo": True}),
    ("long_list", {"solo": True}),
    ("lookup", {"solo": True}),
]
CASES = [(name, {}) for name in list_scenarios()] + [
    v for v in VARIANTS if v[0] in list_scenarios()
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in CASES]

HOSTILE = [
    "",
    "x" * 100_000,
    "\x00\x01\x07\x1b[2J\x7f\u202e\r\n\t",
    "\ud800",
    None,
    "<answer>\ud800\udfff</answer>",
    "<answer>" + "9" * 5000 + "</answer>",
    "<answer>-3,-7,99999999999</answer> answer: accept",
    42,
]

Policy = Callable[[str, int, Task], str]


def play(env: TeamEnv, policy: Policy, task: Task | None = None, seed: int = 0) -> Episode:
    """Run one episode where each acting agent says `policy(agent, round, task)`."""
    env.reset(seed=seed, options={"task": task} if task is not None else None)
    while env.agents:
        env.step({a: policy(a, env.round, env.task) for a in env.acting_agents()})
    return env.episode()


def test_built_in_scenarios_are_installed():
    assert set(BUILT_IN) <= set(list_scenarios())


# ----- the same checks for every scenario ---------------------------------------
@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_pettingzoo_harness(name, options):
    scenario = load_scenario(name, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        parallel_api_test(scenario.make_env(seed=0), num_cycles=50)
        parallel_seed_test(lambda: scenario.make_env(seed=0))


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_description_and_options(name, options):
    scenario = load_scenario(name, **options)
    assert scenario.name == name
    assert scenario.description and "\n" not in scenario.description
    # The options are the factory's own keywords (Scenario keeps no copy of them): one it does
    # not take is refused, by name, as a ScenarioError (one line from the CLI).
    with pytest.raises(ScenarioError, match="no_such_option"):
        load_scenario(name, **options, no_such_option=1)


BAD_OPTIONS = [
    ("debate", {"solvers": 0}), ("debate", {"rounds": "two"}), ("debate", {"share": "bogus"}),
    ("debate", {"max_value": 0}), ("debate", {"ops": "*"}), ("debate", {"tasks": "no/such/file.jsonl"}),
    ("division_of_labour", {"max_value": 2.5}), ("division_of_labour", {"planner": "yes please"}),
    ("division_of_labour", {"share": "bogus"}), ("negotiation", {"mode": "bogus"}), ("negotiation", {"turns": 1.5}),
    ("signalling", {"K": 2.5}), ("signalling", {"reply_tokens": 1.5}), ("signalling", {"channel": "morse"}),
    ("tictactoe", {"opponent": "bogus"}), ("tictactoe", {"invalid": "bogus"}), ("tictactoe", {"legal_move_reward": "high"}),
]


@pytest.mark.parametrize(("name", "options"), BAD_OPTIONS, ids=[f"{n}-{o}" for n, o in BAD_OPTIONS])
def test_a_bad_option_is_a_scenario_error_when_the_scenario_is_made(name, options):
    # Before any task is drawn (some of these used to fail only at the first reset), and as a
    # ScenarioError, which the CLI prints as one line.
    (option,) = options
    with pytest.raises(ScenarioError, match=f"{name}.*{option}|{option}.*{name}"):
        load_scenario(name, **options)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_hostile_actions_never_crash_and_records_round_trip(name, options, tmp_path):
    scenario = load_scenario(name, **options)
    env = scenario.make_env(seed=0)
    episodes = []
    for offset in range(len(HOSTILE)):
        env.reset(seed=offset)
        while env.agents:
            actions = {
                agent: HOSTILE[(offset + i + env.round) % len(HOSTILE)]
                for i, agent in enumerate(env.agents)
            }
            env.step(actions)
        episode = env.episode(step=offset)
        assert set(episode.rewards) == set(scenario.agents)
        assert all(math.isfinite(r) for r in episode.rewards.values())
        episodes.append(episode)

    path = tmp_path / "episodes.msgpack"
    path.write_bytes(b"".join(encode_frame(ep.model_dump(mode="json")) for ep in episodes))
    result = read_episodes(path)
    assert result.complete, result.describe()
    assert result.episodes == episodes


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_train_and_heldout_keys_are_disjoint(name, options):
    scenario = load_scenario(name, **options)
    rng = random.Random(0)
    train = [scenario.sample_task(rng, "train") for _ in range(200)]
    held = [scenario.sample_task(rng, "eval") for _ in range(200)]
    train_keys, held_keys = {t.key for t in train}, {t.key for t in held}
    assert len(train_keys) > 20 and len(held_keys) > 5, "task keys must vary with the rng"
    assert not train_keys & held_keys
    assert all(scenario.split_of(t) == "train" for t in train)
    assert all(scenario.split_of(t) == "eval" for t in held)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_heldout_tasks_are_deterministic(name, options):
    scenario = load_scenario(name, **options)
    first = scenario.heldout_tasks(20, seed=0)
    assert first == scenario.heldout_tasks(20, seed=0)
    assert first == load_scenario(name, **options).heldout_tasks(20, seed=0)
    assert len({t.key for t in first}) == 20
    assert first != scenario.heldout_tasks(20, seed=1)


# ----- scripted teams -------------------------------------------------------------
def debate_right(agent, round_index, task):
    return f"<answer>{task.answer}</answer>"  # the format bonus pays a reply that is only the number


def division_right(agent, round_index, task):
    a, b, c, d = task.meta["numbers"]  # planner only with planner=True
    if agent == "planner":
        return f"worker_1: {a} + {b}, worker_2: {c} + {d}"
    if agent == "worker_1":
        return f"<answer>{a + b}</answer>"
    if agent == "worker_2":
        return f"<answer>{c + d}</answer>"
    return f"{task.answer}"


def signalling_right(agent, round_index, task):
    if agent == "speaker":
        return "The " + task.meta["target"]["colour"] + " " + task.meta["target"]["shape"]
    return f"The {task.answer}."


def signalling_wrong(agent, round_index, task):
    return "no idea"  # the speaker says nothing useful and the listener names no object


def no_answer(agent, round_index, task):
    return "I am not sure."


def negotiation_deal(agent, round_index, task):
    """Red asks the middle of its cost and blue's value; blue accepts."""
    if agent.endswith("advisor"):
        return "accept"
    if agent.startswith("red"):
        return str((task.meta["cost"] + task.meta["value"]) // 2)
    return "Accept."


# name -> (right policy, its team reward, wrong policy, its team reward), per task.
SCRIPTS: dict[str, tuple[Policy, Callable[[Task], float], Policy, Callable[[Task], float]]] = {
    "debate": (debate_right, lambda t: 1.0, no_answer, lambda t: 0.0),
    "division_of_labour": (division_right, lambda t: 1.0, no_answer, lambda t: 0.0),
    "signalling": (signalling_right, lambda t: 1.0, signalling_wrong, lambda t: 0.0),
    # General-sum: any deal's team reward (mean over agents) is the surplus over 2, in tenths.
    "negotiation": (
        negotiation_deal,
        lambda t: (t.meta["value"] - t.meta["cost"]) / 20,
        no_answer,
        lambda t: 0.0,
    ),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripted_right_team_gets_max_and_wrong_team_min(name):
    # negotiation's format bonus is tested in test_negotiation.py; here the deal values alone.
    scenario = load_scenario(name, **({"format_bonus": 0.0} if name == "negotiation" else {}))
    right, right_reward, wrong, wrong_reward = SCRIPTS[name]
    env = scenario.make_env(seed=0)
    for task in scenario.heldout_tasks(10, seed=0):
        good = play(env, right, task)
        assert good.team_reward() == pytest.approx(right_reward(task)), env.render()
        if task.answer is not None:
            assert good.team_answer == task.answer
        bad = play(env, wrong, task)
        assert bad.team_reward() == pytest.approx(wrong_reward(task))
        # The scripts bracket every reward the scenario can give.
        assert wrong_reward(task) <= right_reward(task)


# ----- division of labour and signalling ------------------------------------------
def test_division_of_labour_private_views():
    scenario = load_scenario("division_of_labour")
    assert scenario.agents == ["worker_1", "worker_2", "aggregator"]
    task = scenario.heldout_tasks(1)[0]
    a, b, c, d = task.meta["numbers"]
    assert task.private == {"worker_1": f"Your part: what is {a} + {b}?", "worker_2": f"Your part: what is {c} + {d}?"}
    assert str(a) not in task.prompt

    env = scenario.make_env(seed=0)
    env.reset(options={"task": task})
    # The worker's whole view is its system prompt and its own part: no empty "Task:" line.
    assert [m["content"] for m in env.chat("worker_1")][1] == f"Only you can see this: Your part: what is {a} + {b}?"

    planned = load_scenario("division_of_labour", planner=True)
    assert planned.agents == ["planner", "worker_1", "worker_2", "aggregator"]
    assert set(planned.heldout_tasks(1)[0].private) == {"planner", "worker_1", "worker_2"}
    hidden = load_scenario("division_of_labour", planner=True, workers_see_parts=False).heldout_tasks(1)[0]
    assert set(hidden.private) == {"planner"}
    assert hidden.key == task.key  # the options change the views, not the task


def test_division_of_labour_needs_someone_to_see_the_numbers():
    with pytest.raises(ScenarioError, match="workers_see_parts"):
        load_scenario("division_of_labour", workers_see_parts=False)


def test_division_of_labour_adapters():
    assert [
        load_scenario("division_of_labour").adapter_for(w) for w in ("worker_1", "worker_2")
    ] == [
        "worker_1",
        "worker_2",
    ]
    shared = load_scenario("division_of_labour", planner=True, shared_workers=True)
    assert {shared.adapter_for(w) for w in ("worker_1", "worker_2")} == {"worker"}
    assert shared.adapter_for("planner") == "planner"


def test_division_of_labour_team_answer_is_the_aggregators():
    scenario = load_scenario("division_of_labour", planner=True)
    task = scenario.heldout_tasks(1)[0]

    def policy(agent, round_index, task):
        return f"<answer>{task.answer}</answer>" if agent != "aggregator" else "<answer>-1</answer>"

    episode = play(scenario.make_env(), policy, task)
    assert episode.team_answer == "-1"
    # The planner's own job is the team outcome: nothing but the format bonus.
    assert episode.rewards["planner"] == pytest.approx(0.1)


def test_division_of_labour_rewards_each_agents_own_job():
    scenario = load_scenario("division_of_labour", own_weight=0.5, format_bonus=0.1)
    task = scenario.heldout_tasks(1)[0]
    p1, p2 = task.meta["parts"]

    def policy(agent, round_index, task):
        # worker_1 is off by one; the aggregator adds what it got, so the team is wrong.
        said = {"worker_1": p1 + 1, "worker_2": p2, "aggregator": p1 + 1 + p2}[agent]
        return f"<answer>{said}</answer>"

    episode = play(scenario.make_env(), policy, task)
    assert episode.team_answer == str(p1 + 1 + p2)
    # (1 - 0.1) * (0.5 * team 0 + 0.5 * own) + 0.1 * replied with only a number
    assert episode.rewards == pytest.approx({"worker_1": 0.1, "worker_2": 0.55, "aggregator": 0.55})

    def silent_worker(agent, round_index, task):
        # worker_2 sends no number; the aggregator passes on the one it got.
        return "no idea" if agent == "worker_2" else f"<answer>{p1}</answer>"

    episode = play(scenario.make_env(), silent_worker, task)
    assert episode.rewards["aggregator"] == pytest.approx(0.1)  # nothing sound to add: no own credit


def test_debate_own_weight_credits_each_solvers_last_answer():
    scenario = load_scenario("debate", own_weight=0.5, format_bonus=0.1)
    task = scenario.heldout_tasks(1)[0]

    def policy(agent, round_index, task):
        # Tie (a wrong, b right): the team answer is solver_a's, so the team is wrong.
        return f"<answer>{int(task.answer) + (1 if agent == 'solver_a' else 0)}</answer>"

    episode = play(scenario.make_env(), policy, task)
    assert episode.rewards == pytest.approx({"solver_a": 0.1, "solver_b": 0.55})
    plain = load_scenario("debate", own_weight=0.0, format_bonus=0.1)
    assert play(plain.make_env(), policy, task).rewards == pytest.approx({"solver_a": 0.1, "solver_b": 0.1})


def test_debate_format_bonus_pays_only_bare_numbers():
    scenario = load_scenario("debate", own_weight=0.5, format_bonus=0.1)
    task = scenario.heldout_tasks(1)[0]

    def policy(agent, round_index, task):
        # Both right every time; solver_b wraps its first answer in words.
        if agent == "solver_b" and round_index == 0:
            return f"The total is {task.answer} {task.meta['a']} {task.meta['b']} so {task.answer}"
        return f"{task.answer}."

    episode = play(scenario.make_env(), policy, task)
    assert episode.rewards == pytest.approx({"solver_a": 1.0, "solver_b": 0.9 + 0.1 * 0.5})


def test_bare_number_replies_counts_each_agents_messages():
    scenario = load_scenario("debate", rounds=2)
    task = scenario.heldout_tasks(1)[0]
    words = {("solver_a", 0): "about 5", ("solver_a", 1): "5", ("solver_b", 0): "5", ("solver_b", 1): "5"}
    episode = play(scenario.make_env(), lambda agent, r, t: words[agent, r], task)
    assert bare_number_replies(episode, ["solver_a", "solver_b", "nobody"]) == {"solver_a": 0.5, "solver_b": 1.0, "nobody": 0.0}


def test_signalling_task_meta_and_views():
    scenario = load_scenario("signalling", K=4, message_tokens=6)
    assert scenario.role("speaker").max_new_tokens == 6
    contrasts = set()
    for task in scenario.heldout_tasks(20):
        meta = task.meta
        target = f"{meta['target']['colour']} {meta['target']['shape']}"
        assert task.answer == target and target in meta["candidates"]
        assert len(meta["candidates"]) == 4 == len(set(meta["candidates"]))
        assert sorted(meta["listener_order"]) == sorted(meta["candidates"])
        assert meta["listener_order"][meta["target_number"] - 1] == target
        # the objects share one attribute and differ in the other, so one word tells them apart
        colours, shapes = zip(*(c.split(" ") for c in meta["candidates"]), strict=True)
        varying = "colour" if len(set(colours)) == 4 else "shape"
        assert meta["contrast"] == varying and len(set(shapes if varying == "colour" else colours)) == 1
        contrasts.add(varying)
        assert target in task.private["speaker"]
        assert "target" not in task.private["listener"].lower()
        assert all(c in task.private["listener"] for c in meta["candidates"])
        assert target not in task.prompt
    assert contrasts == {"colour", "shape"}


def _signalling_task(candidates, target, order=None):
    colour, shape = target.split(" ")
    order = order or list(candidates)
    contrast = "colour" if len({c.split(" ")[1] for c in candidates}) == 1 else "shape"
    return Task(
        key="|".join([target, *candidates, *order]), prompt="", answer=target,
        private={"speaker": f"Objects: {', '.join(candidates)}. The target is the {target}.",
                 "listener": f"Objects: {', '.join(order)}."},
        meta={"target": {"colour": colour, "shape": shape}, "contrast": contrast, "candidates": list(candidates),
              "listener_order": order, "target_number": order.index(target) + 1},
    )


@pytest.mark.parametrize(("reply", "picked"), [
    ("The object is the blue circle.", "blue circle"),
    ("blue", "blue circle"),  # one word is enough when only one object has it
    ("Blue circle, surely", "blue circle"),
    ("The circle.", None),  # every object is a circle
    ("red circle or blue circle", None),  # two objects named equally
    ("2", None),  # positions mean nothing: the listener's order is its own
    ("<answer>1</answer>", None),
    ("", None),
])
def test_signalling_listener_picks_the_object_it_names(reply, picked):
    scenario = load_scenario("signalling")
    task = _signalling_task(["red circle", "blue circle", "green circle"], "blue circle", ["green circle", "blue circle", "red circle"])
    episode = play(scenario.make_env(), lambda a, r, t: "The blue one" if a == "speaker" else reply, task)
    assert episode.team_answer == picked
    assert episode.reward_terms["picked_target"]["listener"] == float(picked == "blue circle")
    assert episode.reward_terms["picked_one"] == {"speaker": 0.0, "listener": float(picked is not None)}


@pytest.mark.parametrize(("message", "paid"), [
    ("The blue circle", 1.0),
    ("blue", 1.0),
    ("The circle", 0.0),  # names only what every object shares
    ("blue, not red", 0.0),  # names a distractor's colour too
    ("The target is", 0.0),
])
def test_signalling_speaker_is_paid_for_the_distinguishing_word(message, paid):
    scenario = load_scenario("signalling")
    task = _signalling_task(["red circle", "blue circle", "green circle"], "blue circle")
    episode = play(scenario.make_env(), lambda a, r, t: message if a == "speaker" else "blue circle", task)
    assert episode.reward_terms["distinguishing_word"] == {"speaker": paid, "listener": 0.0}
    # a shape contrast: the shape is the word that tells the objects apart
    shapes = _signalling_task(["red circle", "red star", "red heart"], "red star")
    episode = play(scenario.make_env(), lambda a, r, t: "The red star" if a == "speaker" else "star", shapes)
    assert episode.reward_terms["distinguishing_word"]["speaker"] == 1.0 and episode.team_answer == "red star"


def test_signalling_reward_is_the_weighted_terms_and_checks_its_options():
    task = _signalling_task(["red circle", "blue circle", "green circle"], "blue circle")
    bare = load_scenario("signalling", team_weight=1.0)
    # a listener that picks a wrong object earns its format term only when the terms weigh something
    episode = play(bare.make_env(), lambda a, r, t: "blue" if a == "speaker" else "red circle", task)
    assert episode.rewards == {"speaker": 0.0, "listener": 0.0}
    shaped = load_scenario("signalling", team_weight=0.5)
    episode = play(shaped.make_env(), lambda a, r, t: "blue" if a == "speaker" else "red circle", task)
    assert episode.rewards == pytest.approx({"speaker": 0.5, "listener": 0.5})
    for bad in ({"K": 6}, {"K": 1}, {"message_tokens": 0}, {"reply_tokens": 0}, {"team_weight": 1.5}):
        with pytest.raises(ScenarioError, match="signalling"):
            load_scenario("signalling", **bad)


def test_the_symbol_signalling_game_keeps_novel_combinations_out_of_training():
    import scenarios.signalling as signalling

    scenario = load_scenario("signalling", channel="symbols", values=4, K=3)
    speaker = scenario.roles[0]
    assert speaker.channel is not None and speaker.channel.length == 2 and len(speaker.channel.symbols) == 8
    novel = signalling.novel_combinations(4)
    assert len(novel) == 4 and len({o.split()[0] for o in novel}) == len({o.split()[1] for o in novel}) == 4
    rng = random.Random(0)
    train = [scenario.sample_task(rng, "train") for _ in range(300)]
    assert not any(set(t.meta["candidates"]) & novel for t in train)  # never seen, as target or distractor
    heldout = scenario.heldout_tasks(40, seed=0)
    assert {t.meta["novel"] for t in heldout} == {True, False}  # both kinds are evaluated, told apart
    assert all(t.answer in novel for t in heldout if t.meta["novel"])
    for t in train[:20]:  # both attributes vary; the target is one of the listener's objects
        assert t.answer in t.meta["listener_order"] and len(set(t.meta["candidates"])) == 3
    assert scenario.parse(" ka po") == "ka po" and scenario.parse("the red circle") == "red circle"
    for bad, named in (({"symbols": 40}, "symbols"), ({"K": 13}, "K"), ({"message_length": 0}, "length"),
                       ({"values": 9}, "values")):
        with pytest.raises(ScenarioError, match=named):
            load_scenario("signalling", channel="symbols", **bad)
