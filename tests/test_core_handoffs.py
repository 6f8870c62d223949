"""The core's hand-offs: the reward ledger (every reward written once, where it arose;
returns derived from it), the typed action the rollout gives the env and the turns `step`
returns, failed groups left out once at the trainer's hand-off, global states only when a
trainer asks, seeds from one module, and an `act` reward that is not a number."""

from __future__ import annotations

import pytest
from test_env_driven import AGENTS, countdown, play
from test_rollout import hf, tasks, trio  # noqa: F401 - hf is a fixture

from multiagent_rl import Episode, Outcome, Task
from multiagent_rl.actions import Action
from multiagent_rl.rollout import rollout


def scored_countdown(act_reward):
    """countdown whose `act` gives `act_reward(agent)` as the Outcome's reward."""
    scenario = countdown()
    plain = scenario.act

    def act(view, agent, text):
        outcome = plain(view, agent, text)
        outcome.reward = act_reward(agent)
        return outcome

    scenario.act = act
    return scenario


# ----- the ledger ---------------------------------------------------------------------------
def test_each_reward_is_written_once_where_it_arose_and_returns_come_from_the_ledger():
    # Each move pays the mover 0.1 and the other player 0.02, under the term "move".
    def act_reward(agent):
        return {agent: 0.1, next(a for a in AGENTS if a != agent): 0.02}

    scenario = scored_countdown(act_reward)
    env, steps = play(scenario, ["go", "go"], start=2)
    episode = env.episode()
    assert [(e.agent, e.value, e.term) for e in episode.turns[0].rewards] == [("alice", 0.1, "turn"), ("bob", 0.02, "turn")]
    assert episode.turns[0].reward == 0.1 and episode.turns[1].reward == 0.1
    assert [(e.agent, e.value) for e in episode.final] == [("alice", 0.0), ("bob", 1.0)]
    lines = list(episode.ledger())
    assert len(lines) == 6 and [at for at, _ in lines] == [0, 0, 1, 1, None, None]
    assert episode.returns() == pytest.approx({"alice": 0.12, "bob": 1.12})
    # Without an agent's own turns' rewards: the final ones and what others' turns paid it.
    assert episode.rewards == pytest.approx({"alice": 0.02, "bob": 1.02})
    assert episode.team_reward() == pytest.approx(0.62)
    # The PettingZoo rewards of each step are the same ledger lines, step by step.
    assert sum(sum(s[1][1].values()) for s in steps) == pytest.approx(sum(episode.returns().values()))


def test_a_log_written_before_the_ledger_reads_into_it():
    task = Task(key="t", prompt="p")
    old = {
        "episode_id": "e", "scenario": "s", "task": task.model_dump(), "rewards": {"a": 1.0, "b": 0.5},
        "turns": [{"agent": "a", "round": 0, "reward": -0.25,
                   "message": {"sender": "a", "round": 0, "text": "x"}}],
    }
    episode = Episode.model_validate(old)
    assert episode.turns[0].reward == -0.25 and episode.rewards == {"a": 1.0, "b": 0.5}
    assert episode.returns() == {"a": 0.75, "b": 0.5}
    again = Episode.model_validate(episode.model_dump())  # and what it writes now reads back the same
    assert again.returns() == episode.returns() and again.final == episode.final


@pytest.mark.parametrize("bad", ["0.5", None, float("nan"), [1.0]])
def test_an_act_reward_that_is_not_a_finite_number_fails_the_episode(bad):
    scenario = scored_countdown(lambda agent: bad)
    env = scenario.make_env(seed=0, contain_failures=True)
    env.reset(seed=0, options={"task": Task(key="t", prompt="", meta={"start": 3})})
    env.step({"alice": "go"})
    episode = env.episode()
    assert not env.agents and "act gave reward" in episode.failure and episode.final == []
    # Without containment the scenario's error is raised, naming the value.
    loud = scenario.make_env(seed=0)
    loud.reset(seed=0, options={"task": Task(key="t", prompt="", meta={"start": 3})})
    with pytest.raises(ValueError, match="act gave reward"):
        loud.step({"alice": "go"})


# ----- typed hand-offs -------------------------------------------------------------------------
def test_step_takes_a_typed_action_and_advance_returns_the_turns_it_made():
    scenario = countdown(scripted_bob=True)
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": Task(key="t", prompt="", meta={"start": 3})})
    action = Action(text="go", adapter="alice", prompt_ids=[1, 2, 3], completion_ids=[4, 5], finish_reason="stop")
    made = env.advance({"alice": action})
    assert [(t.agent, t.scripted) for t in made] == [("alice", False), ("bob", True)]  # bob plays inside the step
    assert made[0] is env.turns[0] and made[1] is env.turns[1]
    assert (made[0].adapter, made[0].prompt_tokens, made[0].completion_tokens, made[0].finish_reason) == ("alice", 3, 2, "stop")
    assert made[1].adapter is None
    plain = env.advance({"alice": "go"})  # plain text: the role's declared adapter, no generation facts
    assert plain[0].adapter == "alice" and plain[0].completion_tokens == 0 and not env.agents


def test_global_states_are_kept_only_when_a_trainer_asks(hf):  # noqa: F811
    scenario = trio()
    plain = rollout(scenario, hf, tasks(2), group_size=2, seed=1)
    assert plain.states == {}
    asked = rollout(scenario, hf, tasks(2), group_size=2, seed=1, record_states=True)
    assert set(asked.states) == {(s.episode, s.round) for s in asked.samples}
    assert all(text.startswith("Task: ") for text in asked.states.values())
    assert [s.completion_ids for s in asked.samples] == [s.completion_ids for s in plain.samples]


def test_the_trainer_gets_whole_healthy_groups_renumbered(hf):  # noqa: F811
    scenario = trio()
    batch = rollout(scenario, hf, tasks(3), group_size=2, seed=1, record_states=True)
    batch.episodes[2].failure = "the reward raised"  # group 1 of 0, 1, 2
    kept = batch.without_failed_groups()
    assert [ep.group for ep in kept.episodes] == [0, 0, 2, 2]
    assert {s.episode for s in kept.samples} == {0, 1, 2, 3}
    assert all(kept.episodes[s.episode].group == s.group for s in kept.samples)
    assert len(kept.samples) == len(batch.samples) * 2 // 3
    assert set(kept.states) == {(s.episode, s.round) for s in kept.samples}
    healthy = rollout(scenario, hf, tasks(1), seed=1)
    assert healthy.without_failed_groups() is healthy  # nothing failed: handed over as it is


def test_seeds_keep_the_constants_every_recorded_run_was_made_with():
    from multiagent_rl.seeds import episode_seed, generate_seed, step_seed, task_rng

    assert step_seed(3, 5, rank=2) == 3 * 1_000_003 + 5 + 7_919 * 2
    assert episode_seed(7, group=2, sample=1) == 7 * 100_003 + 2 * 1_009 + 1
    assert generate_seed(7, 4) == 7_004
    import random

    assert task_rng(3, 5).random() == random.Random(3 * 1_000_003 + 5).random()


def test_outcome_term_names_the_ledger_line():
    scenario = scored_countdown(lambda agent: 0.3)
    plain = scenario.act

    def act(view, agent, text):
        outcome: Outcome = plain(view, agent, text)
        outcome.term = "legal_move"
        return outcome

    scenario.act = act
    env, _ = play(scenario, ["go"], start=1)
    assert [(e.term, e.value) for e in env.episode().turns[0].rewards] == [("legal_move", 0.3)]
