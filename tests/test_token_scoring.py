"""Log-probs with every distinct token run once and no full-vocabulary logits: equal, with
their gradients, to a plain forward over each whole sequence; identical samples, the G
samples of a prompt, a chat that grew and unrelated prompts in one call; the chunked
log-prob under its own recomputing backward; an adapter named per call."""

from __future__ import annotations

import pytest
import torch

from multiagent_rl import token_scoring
from multiagent_rl.adapters import LoraSettings, attach_adapters
from multiagent_rl.models import load_model
from multiagent_rl.token_scoring import chunked_logprobs, completion_logprobs, score_tokens

PROMPT = [5, 6, 7, 8, 9, 10, 11, 12]
SAMPLES = [  # (prompt, completion, temperature)
    (PROMPT, [20, 21], 1.0),
    (PROMPT, [22], 1.0),  # the same prompt, another reply: a group's G samples
    (PROMPT, [20, 21], 0.7),  # identical tokens to the first, another temperature
    (PROMPT + [20, 21, 23, 24], [25, 26, 27], 1.0),  # the first one's chat, grown by a turn
    ([5, 6, 7, 30], [31], 1.3),  # shares only the start
    ([40, 41], [42, 43], 1.0),  # nothing in common
    ([50], [51], 1.0),  # a one-token prompt
]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = load_model("tiny")
    # float64: the shared and the plain forward's scores then agree to 1e-10, so a slip shows
    model = model.double()
    model = attach_adapters(model, ["a", "b"], LoraSettings(rank=2, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # not zero, so the adapters change the scores and get gradients
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)
    model.set_adapter("a")
    return model


def _plain(model, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1] / temperature  # (c, V)
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize(("prefix_key", "cluster_key"), [(32, 16), (3, 1), (2, 4), (1, 1)])
def test_scores_and_gradients_equal_a_plain_forward_of_each_sequence(model, monkeypatch, prefix_key, cluster_key):
    monkeypatch.setattr(token_scoring, "PREFIX_KEY", prefix_key)
    monkeypatch.setattr(token_scoring, "CLUSTER_KEY", cluster_key)
    params = [p for n, p in model.named_parameters() if "lora_" in n and ".a." in n]
    shared = completion_logprobs(model, *zip(*SAMPLES, strict=True), pad_id=0)
    weights = [torch.arange(1.0, len(c) + 1) for _, c, _ in SAMPLES]
    got = torch.autograd.grad(sum((s * w).sum() for s, w in zip(shared, weights, strict=True)), params)
    plain = [_plain(model, *sample) for sample in SAMPLES]
    want = torch.autograd.grad(sum((s * w).sum() for s, w in zip(plain, weights, strict=True)), params)
    for a, b in zip(shared, plain, strict=True):
        assert torch.allclose(a.double(), b.double(), atol=1e-10), (a, b)
    for a, b in zip(got, want, strict=True):
        # The CPU attention kernel's float64 backward differs by up to 5e-7 between a long
        # sequence and its prefix run alone (two plain forwards against one: the same gap).
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), float((a - b).abs().max())


def test_each_distinct_token_runs_through_the_model_once(model):
    """Four samples of one 40-token prompt with 2-token replies: 40 + 4 x 2 tokens run, not 4 x 42."""
    prompt = list(range(100, 140))
    seen = []
    hook = model.get_base_model().get_decoder().embed_tokens.register_forward_hook(
        lambda _module, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            completion_logprobs(model, [prompt] * 4, [[1, 2], [3, 4], [5, 6], [1, 2]], [1.0] * 4, pad_id=0)
    finally:
        hook.remove()
    ran = sum(int((ids != 0).sum()) for ids in seen)
    assert ran == 40 + 3 * 2  # the repeated sample [1, 2] is read off its twin


def test_chunked_logprobs_hold_one_chunk_of_logits_forward_and_backward():
    torch.manual_seed(0)
    calls = []

    class Head(torch.nn.Linear):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    head = Head(8, 50, bias=False)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    scale = torch.linspace(0.5, 2.0, 10)
    got = chunked_logprobs(head, hidden, targets, scale, chunk=3)
    forward_calls = len(calls)
    got.sum().backward()
    assert forward_calls == 4 and len(calls) == 8  # each chunk's logits remade in the backward pass
    assert max(calls) <= 3
    grads = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    want = torch.log_softmax(head(hidden) * scale.unsqueeze(1), -1).gather(1, targets.unsqueeze(1)).squeeze(1)
    want.sum().backward()
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6) and torch.allclose(grads[1], head.weight.grad, atol=1e-6)


def test_an_adapter_named_for_one_call_scores_as_if_it_were_active(model):
    sequences, queries = [PROMPT + [20, 21]], [[(len(PROMPT), 20), (len(PROMPT) + 1, 21), (len(PROMPT) + 2, 2)]]
    model.eval()  # peft takes per-call adapter names in eval mode only
    with torch.no_grad():
        named = score_tokens(model, sequences, queries, [1.0], pad_id=0, adapter_name="b")[0]
        as_a = score_tokens(model, sequences, queries, [1.0], pad_id=0)[0]
        model.set_adapter("b")
        try:
            as_b = score_tokens(model, sequences, queries, [1.0], pad_id=0)[0]
        finally:
            model.set_adapter("a")
            model.train()
    assert torch.allclose(named, as_b, atol=1e-6)
    assert not torch.allclose(named, as_a, atol=1e-4)  # the adapters differ, so this is not a vacuous check
    assert model.active_adapter == "a"


def test_a_query_outside_its_sequence_is_refused(model):
    with pytest.raises(ValueError, match="query position 4 is outside 1..3"):
        score_tokens(model, [[1, 2, 3]], [[(4, 5)]], [1.0], pad_id=0)
    with pytest.raises(ValueError, match="one query list and temperature per sequence"):
        score_tokens(model, [[1, 2, 3]], [], [1.0], pad_id=0)


def test_with_gradient_checkpointing_each_row_runs_whole_and_scores_the_same(model):
    """transformers' checkpointed layers drop the cache in training: rows then run whole,
    and the scores and gradients are still a plain forward's."""
    params = [p for n, p in model.named_parameters() if "lora_" in n and ".a." in n]
    base = model.get_base_model()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        shared = completion_logprobs(model, *zip(*SAMPLES, strict=True), pad_id=0)
        got = torch.autograd.grad(sum(s.sum() for s in shared), params)
    finally:
        base.gradient_checkpointing_disable()
    plain = [_plain(model, *sample) for sample in SAMPLES]
    want = torch.autograd.grad(sum(s.sum() for s in plain), params)
    for a, b in zip(shared, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
