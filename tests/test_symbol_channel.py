"""A role restricted to a symbol vocabulary: declaration errors, the HF backend never sends a
token outside it (every temperature, greedy, mixed with free rows), its log-probs are the
renormalised ones the update scores, and a training step on a symbol-only speaker trains
its adapter, not the base model. (vLLM: tests/test_vllm_backend.py; the server's request:
tests/test_server_backend.py.)"""

from __future__ import annotations

import random

import pytest
import torch

from multiagent_rl import Episode, Role, Scenario, ScenarioError, SymbolChannel, Task, chain
from multiagent_rl.adapters import LoraSettings, attach_adapters
from multiagent_rl.backends.base import GenerationRequest
from multiagent_rl.backends.hf import HFBackend
from multiagent_rl.models import load_model
from multiagent_rl.token_scoring import completion_logprobs, score_tokens
from trainers.loop import Run

CODE = SymbolChannel(("ka", "po", "mu", "ti"), length=3)
CHATS = [
    [{"role": "system", "content": "You are the speaker."}, {"role": "user", "content": f"The target is {t}."}]
    for t in ("red circle", "blue star")
]


@pytest.fixture(scope="module")
def backend(single_thread) -> HFBackend:
    model, tokenizer = load_model("tiny")
    peft_model = attach_adapters(model, ["speaker"], LoraSettings(rank=4, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an adapter unlike the base, so the adapter's own distribution is what is masked
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g))
    return HFBackend(peft_model, tokenizer)


@pytest.mark.parametrize(
    "symbols, length, problem",
    [(("ka",), 2, "at least 2 symbols"), (("ka", "ka", "po"), 2, "repeated: ka"), (("ka", "Po"), 2, "'Po'"),
     (("ka", "po mu"), 2, "'po mu'"), (("ka", "po"), 0, "length"), (("ka", "po"), 1.5, "length")],
)
def test_a_bad_channel_names_the_problem(symbols, length, problem):
    with pytest.raises(ScenarioError, match=problem):
        SymbolChannel(symbols, length)


def test_a_scripted_role_takes_no_channel_and_a_channel_must_be_one():
    def make(role: Role) -> Scenario:
        return Scenario(name="s", roles=[role, Role("b", "B")], graph=chain(["a", "b"]), schedule=[["a"], ["b"]],
                        make_task=lambda rng: Task(key="k", prompt="p"), reward=lambda t, e: {"a": 0.0, "b": 0.0})

    with pytest.raises(ScenarioError, match="scripted role"):
        make(Role("a", "A", policy=lambda view, agent: "ka", channel=CODE))
    with pytest.raises(ScenarioError, match="must be a SymbolChannel"):
        make(Role("a", "A", channel=["ka", "po"]))


def test_a_symbol_of_several_tokens_is_refused_by_name(backend):
    assert len(CODE.token_ids(backend.tokenizer)) == 4
    with pytest.raises(ScenarioError, match="'zqxvbnk' is [0-9]+ tokens"):
        SymbolChannel(("ka", "zqxvbnk"), 1).token_ids(backend.tokenizer)


def test_parse_reads_exactly_length_known_symbols():
    assert CODE.parse(" ka po ka") == ("ka", "po", "ka")
    assert CODE.parse("ka po") is None and CODE.parse("ka po zz") is None


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0, 3.0])
def test_hf_never_leaves_the_vocabulary_and_sends_exactly_length_symbols(backend, temperature):
    allowed = set(CODE.token_ids(backend.tokenizer))
    requests = [GenerationRequest(messages=c, adapter=a, temperature=temperature, channel=CODE)
                for c in CHATS for a in ("speaker", None)] * 8
    free = GenerationRequest(messages=CHATS[0], adapter="speaker", temperature=1.0, max_new_tokens=6)
    for seed in range(3):
        results = backend.generate([*requests, free], seed=seed)
        for result in results[:-1]:
            assert len(result.completion_ids) == CODE.length and set(result.completion_ids) <= allowed
            assert result.finish_reason == "length" and CODE.parse(result.text) is not None
            assert result.allowed_token_ids == CODE.token_ids(backend.tokenizer)
        assert results[-1].allowed_token_ids is None  # the free row in the same batch is not restricted
    if temperature == 0.0:  # greedy: the most likely allowed token, not the most likely token
        assert len({tuple(r.completion_ids) for r in results[:-1:2]}) <= len(CHATS)


def test_hf_logprobs_are_the_renormalised_ones_the_update_scores(backend):
    allowed = CODE.token_ids(backend.tokenizer)
    requests = [GenerationRequest(messages=c, adapter="speaker", temperature=t, channel=CODE)
                for c in CHATS for t in (0.7, 1.3)]
    results = backend.generate(requests, seed=5)
    model = backend.model
    model.set_adapter("speaker")
    with torch.no_grad():
        scored = completion_logprobs(model, [r.prompt_ids for r in results], [r.completion_ids for r in results],
                                     [q.temperature for q in requests], backend.tokenizer.pad_token_id,
                                     [allowed] * len(results))
        unrestricted = completion_logprobs(model, [r.prompt_ids for r in results], [r.completion_ids for r in results],
                                           [q.temperature for q in requests], backend.tokenizer.pad_token_id)
    for result, mine, full in zip(results, scored, unrestricted, strict=True):
        assert torch.allclose(mine, torch.tensor(result.logprobs), atol=1e-4)
        assert (full < mine - 1e-3).all()  # the whole vocabulary's log-probs are lower: mass outside the set


def test_restricted_scores_and_gradients_equal_a_plain_masked_softmax(single_thread):
    model, tokenizer = load_model("tiny")
    model = model.double()
    rng = random.Random(0)
    allowed = [5, 17, 301, 999]
    sequences = [[rng.randrange(1000) for _ in range(n)] for n in (9, 12, 7)]
    queries = [[(len(s) - 2, rng.choice(allowed)), (len(s), rng.choice(allowed))] for s in sequences]
    restricted = [allowed, None, allowed]
    got = score_tokens(model, sequences, queries, [0.8, 1.0, 1.5], tokenizer.pad_token_id, allowed=restricted)
    total = sum(g.sum() for g in got)
    total.backward()
    mine = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    want = []
    for seq, asked, temp, only in zip(sequences, queries, [0.8, 1.0, 1.5], restricted, strict=True):
        logits = model(torch.tensor([seq])).logits[0] / temp  # (L, V)
        if only is not None:
            mask = torch.full_like(logits, float("-inf"))
            mask[:, only] = 0.0
            logits = logits + mask
        logps = torch.log_softmax(logits, -1)
        want.append(torch.stack([logps[p - 1, t] for p, t in asked]))
    sum(w.sum() for w in want).backward()
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(mine[name], p.grad, atol=1e-9), name


def _code_scenario() -> Scenario:
    def reward(task: Task, episode: Episode) -> dict[str, float]:
        said = CODE.parse(episode.turns[0].message.text) or ()
        return {"speaker": float(said.count("ka")), "listener": 0.0}

    return Scenario(
        name="code", roles=[Role("speaker", "Speak in code.", channel=CODE), Role("listener", "Listen.")],
        graph=chain(["speaker", "listener"]), schedule=[["speaker"], ["listener"]],
        make_task=lambda rng: Task(key=f"t{rng.randrange(10**6)}", prompt="Go."), reward=reward, max_new_tokens=3,
    )


def test_a_training_step_trains_the_symbol_speaker_with_no_sampler_gap(single_thread, tmp_path):
    from multiagent_rl.config import load_config

    cfg = load_config(None, ["scenario=code", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2",
                             "group_size=4", "eval_episodes=2", "eval_every=0", "lora.rank=4", "lr=0.01",
                             "temperature=1.0"])
    run = Run(cfg, tmp_path, scenario=_code_scenario())
    base = {n: t.detach().clone() for n, t in run.model.state_dict().items() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in run.model.named_parameters() if ".speaker." in n and "lora_B" in n}
    step = run.train_step(1)
    metrics = step.metrics()
    assert metrics["update/skipped"] == 0.0 and metrics["update/informative_samples"] > 0
    # The sampler's log-probs and the update's agree: both are the renormalised distribution.
    assert metrics["policy/sampler_logprob_gap_max"] < 1e-3
    changed = [n for n, p in run.model.named_parameters() if n in lora and not torch.equal(p, lora[n])]
    assert changed, "the speaker's adapter did not move"
    assert all(torch.equal(t, base[n]) for n, t in run.model.state_dict().items() if n in base)


def test_the_symbol_entropy_bonus_is_the_exact_entropy_over_the_symbols_and_acts_on_tied_turns(single_thread):
    from trainers.policy import Sample, UpdateSettings, policy_update, symbol_entropy

    model, tokenizer = load_model("tiny")
    model = attach_adapters(model, ["speaker"], LoraSettings(rank=4, target_modules=["q_proj", "v_proj"]))
    model.set_adapter("speaker")
    allowed = CODE.token_ids(tokenizer)
    samples = [Sample(adapter="speaker", prompt_ids=[5, 6, 7, 8], completion_ids=[allowed[0], allowed[2]],
                      advantage=0.0, temperature=0.9, allowed_token_ids=allowed),
               Sample(adapter="speaker", prompt_ids=[5, 6, 9], completion_ids=[11, 12, 13], advantage=0.0)]
    with torch.no_grad():
        got = symbol_entropy(model, samples, tokenizer.pad_token_id)  # (2, 3)
        logits = model(torch.tensor([[5, 6, 7, 8, allowed[0]]])).logits[0, -2:, list(allowed)] / 0.9  # (2, A)
    p = torch.softmax(logits, -1)
    assert torch.allclose(got[0, 1:], -(p * p.log()).sum(-1), atol=1e-5) and got[0, 0] == 0 and (got[1] == 0).all()
    # Every advantage ties: without the bonus nothing trains; with it the symbol turn does, the other not.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    assert policy_update(model, optimizer, samples, UpdateSettings(), tokenizer.pad_token_id)["update/skipped"] == 1.0
    before = {n: t.detach().clone() for n, t in model.named_parameters() if "lora_B" in n}
    metrics = policy_update(model, optimizer, samples, UpdateSettings(symbol_entropy=0.1), tokenizer.pad_token_id)
    assert metrics["update/skipped"] == 0.0 and metrics["policy/symbol_entropy"] > 0
    assert any(not torch.equal(t, before[n]) for n, t in model.named_parameters() if n in before)
