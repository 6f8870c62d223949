"""HFBackend on the tiny model with two LoRA adapters: one mixed-adapter call per batch,
end-of-turn handling when pad == eos, greedy equivalence, per-row budgets, stop strings,
seeds, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from multiagent_rl.adapters import LoraSettings, attach_adapters
from multiagent_rl.backends.base import GenerationBackend, GenerationRequest
from multiagent_rl.backends.hf import HFBackend, SampledLogprobs
from multiagent_rl.models import load_model

ADAPTERS = ["alpha", "beta"]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


@pytest.fixture(scope="module")
def backend(single_thread) -> HFBackend:
    model, tokenizer = load_model("tiny")
    peft_model = attach_adapters(model, ADAPTERS, LoraSettings(rank=4, target_modules=["q_proj", "v_proj", "o_proj"]))
    # LoRA B starts at zero (adapter == base); give each adapter its own weights so rows differ.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 2.0)
    return HFBackend(peft_model, tokenizer)


def greedy_reference(backend: HFBackend, messages, adapter: str | None, max_new_tokens: int) -> list[int]:
    """Plain `model.generate(do_sample=False)` with the adapter set the usual peft way."""
    model = backend.model
    ids = torch.tensor([backend.encode(GenerationRequest(messages=messages))])
    kwargs = dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=backend.tokenizer.pad_token_id, eos_token_id=backend.end_ids,
    )
    model.eval()
    with torch.no_grad():
        if adapter is None:
            with model.disable_adapter():
                out = model.generate(**kwargs)
        else:
            model.set_adapter(adapter)
            out = model.generate(**kwargs)
    new = out[0, ids.shape[1] :].tolist()
    for j, t in enumerate(new):  # up to and including the first end token, as the backend keeps it
        if t in backend.end_ids:
            return new[: j + 1]
    return new


def test_backend_satisfies_the_protocol(backend):
    assert isinstance(backend, GenerationBackend)
    assert backend.end_ids == [backend.tokenizer.eos_token_id]
    assert backend.tokenizer.pad_token_id == backend.tokenizer.eos_token_id  # the case tested below


def test_mixed_adapters_in_one_call_return_results_in_order(backend):
    requests = [
        GenerationRequest(chat(f"question {i}"), adapter=a, max_new_tokens=5, tag=("ep", i))
        for i, a in enumerate(["alpha", None, "beta", "alpha", None])
    ]
    results = backend.generate(requests, seed=3)
    assert [r.tag for r in results] == [("ep", i) for i in range(5)]
    for req, res in zip(requests, results, strict=True):
        assert res.prompt_ids == backend.encode(req)
        assert 1 <= len(res.completion_ids) <= 5
        assert len(res.logprobs) == len(res.completion_ids)
        assert all(lp <= 0.0 for lp in res.logprobs)
        assert res.finish_reason in ("stop", "length")


def test_greedy_equals_model_generate_per_adapter_even_in_a_mixed_batch(backend):
    messages = chat("Name a colour.")
    adapters = ["alpha", "beta", None]
    results = backend.generate(
        [GenerationRequest(messages, adapter=a, max_new_tokens=6, temperature=0.0) for a in adapters]
    )
    expected = [greedy_reference(backend, messages, a, 6) for a in adapters]
    assert [r.completion_ids for r in results] == expected
    assert len({tuple(e) for e in expected}) == 3  # the adapters really differ: rows were routed
    for r in results:
        assert r.logprobs == [0.0] * len(r.completion_ids)  # greedy: probability 1 under the sampler


def test_greedy_is_deterministic_and_left_padding_does_not_change_rows(backend):
    short, long = chat("Hi."), chat("Please write a long and detailed answer about the sea and the sky.")
    alone = [
        backend.generate([GenerationRequest(m, adapter="beta", max_new_tokens=6, temperature=0.0)], seed=s)[0]
        for m, s in ((short, 1), (long, 2))
    ]
    together = backend.generate(
        [GenerationRequest(m, adapter="beta", max_new_tokens=6, temperature=0.0) for m in (short, long)], seed=9
    )
    assert len(alone[0].prompt_ids) < len(alone[1].prompt_ids)
    assert [r.completion_ids for r in together] == [r.completion_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]


class ForceEndToken:
    """Forward hook on lm_head: at generation step `step`, make `rows` emit the end token."""

    def __init__(self, end_id: int, plan: dict[int, int]):
        self.end_id, self.plan, self.calls = end_id, plan, 0

    def __call__(self, module, inputs, output):
        for row, step in self.plan.items():
            if self.calls == step:
                output[row, -1, self.end_id] = 1e4
        self.calls += 1
        return output


def test_completion_ends_at_the_first_end_token_and_the_pad_tail_is_dropped(backend):
    end = backend.tokenizer.eos_token_id
    hook = ForceEndToken(end, {0: 2, 1: 0})  # row 0 ends after 2 tokens, row 1 at once, row 2 never
    handle = backend.model.base_model.model.lm_head.register_forward_hook(hook)
    try:
        results = backend.generate(
            [GenerationRequest(chat(f"q{i}"), adapter="alpha", max_new_tokens=6, temperature=1.0) for i in range(3)],
            seed=0,
        )
    finally:
        handle.remove()
    first, empty, full = results
    # row 0: two real tokens then <|im_end|> (kept, so the policy learns to stop); the tail of
    # pad (== end) tokens the batch kept generating is not part of the completion.
    assert len(first.completion_ids) == 3 and first.completion_ids[-1] == end
    assert end not in first.completion_ids[:-1]
    assert first.finish_reason == "stop"
    assert len(first.logprobs) == 3 and first.logprobs[-1] == pytest.approx(0.0, abs=1e-4)
    assert first.text == backend.tokenizer.decode(first.completion_ids[:-1], skip_special_tokens=True)
    assert first.text.strip(), "a completion with real tokens before the end token decoded as empty"
    # row 1: ended at once -> genuinely empty text, one token
    assert empty.completion_ids == [end] and empty.text == "" and empty.finish_reason == "stop"
    # row 2: never ended, ran to its budget
    assert len(full.completion_ids) == 6 and full.finish_reason == "length" and end not in full.completion_ids
    assert len(full.logprobs) == 6


def test_per_row_max_new_tokens(backend):
    budgets = [2, 7, 4]
    results = backend.generate(
        [GenerationRequest(chat("Count."), adapter=a, max_new_tokens=n) for a, n in zip(["alpha", "beta", None], budgets, strict=True)],
        seed=5,
    )
    for n, r in zip(budgets, results, strict=True):
        assert len(r.completion_ids) <= n and len(r.logprobs) == len(r.completion_ids)
        if backend.tokenizer.eos_token_id not in r.completion_ids:
            assert len(r.completion_ids) == n and r.finish_reason == "length"


def test_stop_strings_cut_the_text(backend):
    messages = chat("Tell me a story.")
    plain = backend.generate([GenerationRequest(messages, adapter="alpha", max_new_tokens=10, temperature=0.0)])[0]
    assert len(plain.completion_ids) == 10
    # a stop string from the middle of the greedy text
    words = plain.text.split()
    stop = next(w for w in words[1:] if w.strip() and plain.text.index(w) > 0)
    cut = backend.generate([GenerationRequest(messages, adapter="alpha", max_new_tokens=10, temperature=0.0, stop=[stop])])[0]
    assert cut.text == plain.text.split(stop, 1)[0]
    assert stop not in cut.text
    assert cut.finish_reason == "stop"
    assert len(cut.completion_ids) < len(plain.completion_ids)
    assert cut.completion_ids == plain.completion_ids[: len(cut.completion_ids)]
    assert len(cut.logprobs) == len(cut.completion_ids)
    # the kept tokens are the fewest that contain the stop string
    decode = backend.tokenizer.decode
    assert stop in decode(cut.completion_ids, skip_special_tokens=True)
    assert stop not in decode(cut.completion_ids[:-1], skip_special_tokens=True)


def test_unknown_adapter_is_a_value_error_naming_it(backend):
    with pytest.raises(ValueError, match="'gamma'") as info:
        backend.generate([GenerationRequest(chat("x"), adapter="alpha"), GenerationRequest(chat("y"), adapter="gamma")])
    assert "alpha" in str(info.value) and "beta" in str(info.value)  # and says what exists


def test_adapter_request_without_adapters_is_a_value_error(single_thread):
    model, tokenizer = load_model("tiny")
    plain = HFBackend(model, tokenizer)
    with pytest.raises(ValueError, match="'alpha'"):
        plain.generate([GenerationRequest(chat("x"), adapter="alpha")])
    assert len(plain.generate([GenerationRequest(chat("x"), max_new_tokens=2)])[0].completion_ids) <= 2


@pytest.mark.parametrize("training", [True, False])
def test_training_flag_is_restored(backend, training):
    backend.model.train(training)
    backend.generate([GenerationRequest(chat("x"), adapter="beta", max_new_tokens=2)], seed=0)
    assert backend.model.training is training
    backend.model.eval()


def test_seeded_sampling_is_reproducible(backend):
    requests = [GenerationRequest(chat(f"q{i}"), adapter=a, max_new_tokens=6, temperature=1.0) for i, a in enumerate(["alpha", "beta", None, "alpha"])]
    first = backend.generate(requests, seed=11)
    again = backend.generate(requests, seed=11)
    other = backend.generate(requests, seed=12)
    assert [r.completion_ids for r in first] == [r.completion_ids for r in again]
    assert [r.logprobs for r in first] == [r.logprobs for r in again]
    assert [r.completion_ids for r in first] != [r.completion_ids for r in other]


def test_chunked_and_top_p_split_batches_keep_request_order(single_thread, backend):
    chunked = HFBackend(backend.model, backend.tokenizer, max_batch_size=2)
    requests = [
        GenerationRequest(chat(f"q{i}"), adapter=["alpha", "beta", None][i % 3], max_new_tokens=2, top_p=[1.0, 0.9][i % 2], tag=i)
        for i in range(5)
    ]
    assert [r.tag for r in chunked.generate(requests, seed=0)] == list(range(5))
    assert chunked.generate([]) == []


# --- log-probs read during generation (SampledLogprobs) against the old output_scores way ---

MIXED = [  # (adapter, temperature, max_new_tokens): sampled and greedy rows, budgets, adapters
    ("alpha", 1.0, 8), (None, 0.0, 3), ("beta", 0.7, 5), ("alpha", 0.0, 8), (None, 1.3, 2), ("beta", 1.0, 6),
]


@pytest.fixture
def scores_tap(backend):
    """Every `model.generate` call also returns `output_scores` (kept in the list this yields)."""
    outs, real = [], backend.model.generate

    def generate(**kwargs):
        out = real(**kwargs, output_scores=True, return_dict_in_generate=True)
        outs.append(out)
        return out.sequences

    backend.model.generate = generate
    try:
        yield outs
    finally:
        del backend.model.generate


def scores_logprobs(out, width: int) -> torch.Tensor:
    """The old computation: each step's processed scores, log-softmax, at the token taken."""
    sequences = out.sequences[:, width:]
    return torch.stack(
        [torch.log_softmax(s.float(), dim=-1).gather(1, sequences[:, t : t + 1]).squeeze(1) for t, s in enumerate(out.scores)],
        dim=1,
    )  # (B, T)


def sample_against_scores(hf: HFBackend, outs: list, requests: list[GenerationRequest], top_p: float, seed: int):
    """(sequences, new log-probs, old log-probs) of one `_sample` call, every pad tail included."""
    prompts = [hf.encode(r) for r in requests]
    torch.manual_seed(seed)
    sequences, logprobs = hf._sample(prompts, requests, top_p, [None] * len(requests))
    (out,) = outs
    width = max(len(p) for p in prompts)
    assert torch.equal(sequences, out.sequences[:, width:])
    return sequences, logprobs, scores_logprobs(out, width)


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_logprobs_equal_the_output_scores_computation(backend, scores_tap, top_p, mixed_precision):
    hf = HFBackend(backend.model, backend.tokenizer, mixed_precision=mixed_precision)
    requests = [GenerationRequest(chat(f"q{i}"), adapter=a, max_new_tokens=n, temperature=t, top_p=top_p) for i, (a, t, n) in enumerate(MIXED)]
    sequences, new, old = sample_against_scores(hf, scores_tap, requests, top_p, seed=4)
    assert new.shape == old.shape == (len(MIXED), 8)
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    assert (new[[1, 3]] == 0).all()  # greedy rows: probability 1 under the sampler
    assert new.isfinite().all() and (new <= 0).all()


def test_logprobs_of_finished_rows_and_an_early_stop_equal_the_output_scores_computation(backend, scores_tap):
    # Rows end at steps 0, 2 and 4, so the batch stops after 5 of its 8 tokens: finished
    # rows get pad (== end) tokens, and the last token's log-prob is read after generate.
    hook = ForceEndToken(backend.tokenizer.eos_token_id, {0: 2, 1: 0, 2: 4})
    handle = backend.model.base_model.model.lm_head.register_forward_hook(hook)
    requests = [
        GenerationRequest(chat(f"q{i}"), adapter=a, max_new_tokens=8, temperature=t)
        for i, (a, t) in enumerate([("alpha", 1.0), ("beta", 0.0), (None, 0.9)])
    ]
    try:
        sequences, new, old = sample_against_scores(backend, scores_tap, requests, 1.0, seed=2)
    finally:
        handle.remove()
    assert sequences.shape == (3, 5)
    assert (sequences[0, 2:] == backend.tokenizer.pad_token_id).all()
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)  # -inf where a greedy row's pad was not its argmax


def test_results_carry_the_output_scores_logprobs_cut_per_row(backend, scores_tap):
    requests = [GenerationRequest(chat(f"q{i}"), adapter=a, max_new_tokens=n, temperature=t) for i, (a, t, n) in enumerate(MIXED)]
    results = backend.generate(requests, seed=7)
    (out,) = scores_tap
    old = scores_logprobs(out, max(len(r.prompt_ids) for r in results))
    for i, r in enumerate(results):
        assert r.logprobs == pytest.approx(old[i, : len(r.completion_ids)].tolist(), abs=1e-6)


def test_the_models_generation_config_warpers_cannot_run_after_the_logprobs(backend, scores_tap):
    model = backend.model.get_base_model()
    saved = copy.deepcopy(model.generation_config)
    model.generation_config.update(temperature=0.5, top_k=5, top_p=0.5, min_p=0.3, typical_p=0.5, epsilon_cutoff=0.1, renormalize_logits=True)
    try:
        requests = [GenerationRequest(chat(f"q{i}"), adapter=a, max_new_tokens=4) for i, a in enumerate(ADAPTERS)]
        _, new, old = sample_against_scores(backend, scores_tap, requests, 1.0, seed=1)
    finally:
        model.generation_config = saved
    torch.testing.assert_close(new, old, rtol=0, atol=1e-6)
    assert scores_tap[0].scores[0].isfinite().all()  # temperature 1, no truncation: only ours applied


def test_sampled_logprobs_keep_one_step_of_vocabulary():
    rows, vocab, steps = 3, 50, 6
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(rows, vocab, generator=g) for _ in range(steps)]
    tokens = torch.randint(vocab, (rows, steps), generator=g)
    recorder = SampledLogprobs()
    for t in range(steps):
        assert recorder(tokens[:, :t], scores[t]) is scores[t]  # scores pass unchanged
        assert recorder.pending.shape == (rows, vocab)  # the one (rows, vocab) tensor held
        assert all(p.untyped_storage().nbytes() == rows * 4 for p in recorder.picked)  # (rows,) per step, no views
    got = recorder.finish(tokens)
    assert recorder.pending is None
    want = torch.stack([torch.log_softmax(s, -1).gather(1, tokens[:, t : t + 1]).squeeze(1) for t, s in enumerate(scores)], 1)
    assert torch.equal(got, want)


def test_sharing_prompt_prefixes_samples_the_same_tokens_and_encodes_fewer(backend):
    """Prompts that begin alike are encoded once (`share_prefixes`): at a fixed seed the
    sampled tokens are those of one plain left-padded batch, and fewer tokens run."""
    requests = [
        GenerationRequest(chat("What is 2 + 2?"), "alpha", max_new_tokens=6),
        GenerationRequest(chat("What is 2 + 2?"), "alpha", max_new_tokens=6),  # a task's G episodes
        GenerationRequest(chat("What is 2 + 2? Think about it first, then reply."), "alpha", max_new_tokens=6),
        GenerationRequest(chat("Name a colour."), "beta", max_new_tokens=6, temperature=0.7),
        GenerationRequest(chat("What is 2 + 2?"), None, max_new_tokens=6),  # the base model shares nothing with alpha
        GenerationRequest([{"role": "user", "content": "hi"}], "beta", max_new_tokens=6),
    ]
    embed = backend.model.get_base_model().get_decoder().embed_tokens
    ran = []
    hook = embed.register_forward_hook(lambda _m, args, _o: ran.append(int(args[0].numel())))
    try:
        results = {}
        for share in (False, True):
            backend.share_prefixes = share
            ran.clear()
            results[share] = backend.generate(requests, seed=3)
            results[share, "ran"] = sum(ran)
    finally:
        backend.share_prefixes = True
        hook.remove()
    for plain, shared in zip(results[False], results[True], strict=True):
        assert shared.completion_ids == plain.completion_ids
        assert shared.logprobs == pytest.approx(plain.logprobs, abs=1e-4)
    assert results[True, "ran"] < results[False, "ran"]
