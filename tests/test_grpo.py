"""GRPO maths against values worked out by hand: advantages, the clipped loss, KL, loss
aggregation, batch padding and credit. Pure functions of hand-made tensors, no model."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

from trainers import policy
from trainers.grpo import discounted_credit, group_advantages
from trainers.policy import (
    Normaliser,
    Sample,
    aggregate,
    clipped_policy_loss,
    completion_mask,
    kl_to_reference,
    left_pad,
)


def close(actual: torch.Tensor, expected: list, tol: float = 1e-5) -> bool:
    return torch.allclose(actual.float(), torch.tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


# ----- group-relative advantages -------------------------------------------------------
def test_advantages_scaled_by_group_std():
    # group 0: rewards 1, 0 -> mean 0.5, population std 0.5 -> +-1; group 1 all equal -> 0
    adv, stats = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]), eps=0.0)
    assert close(adv, [1.0, -1.0, 0.0, 0.0])
    assert (stats.groups, stats.equal_reward_groups, stats.singleton_groups) == (2, 1, 0)


def test_advantages_default_eps_is_added_to_the_std():
    adv, _ = group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert close(adv, [0.5 / (0.5 + 1e-4), -0.5 / (0.5 + 1e-4)], tol=1e-7)


def test_advantages_without_std_scaling_are_centred_rewards():
    # Dr. GRPO: mean 2, no division
    adv, stats = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 0, 0]), scale_by_std=False)
    assert close(adv, [1.0, -1.0, 0.0])
    assert stats.equal_reward_groups == 0
    # the same group with scaling: population std of (1, -1, 0) is sqrt(2/3)
    adv, _ = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 0, 0]), eps=0.0)
    s = math.sqrt(2 / 3)
    assert close(adv, [1 / s, -1 / s, 0.0])


def test_several_interleaved_groups():
    rewards = torch.tensor([1.0, 10.0, 3.0, 10.0, 5.0, 7.0, 0.0, 4.0])
    groups = torch.tensor([0, 1, 0, 1, 0, 2, 3, 3])
    # group 0 (indices 0,2,4): 1,3,5 -> centred -2,0,2, population std sqrt(8/3)
    # group 1 (1,3): 10,10 equal; group 2 (5): singleton; group 3 (6,7): 0,4 -> -2,2, std 2
    s0 = math.sqrt(8 / 3)
    adv, stats = group_advantages(rewards, groups, eps=0.0)
    assert close(adv, [-2 / s0, 0.0, 0.0, 0.0, 2 / s0, 0.0, -1.0, 1.0])
    assert (stats.groups, stats.equal_reward_groups, stats.singleton_groups) == (4, 1, 1)
    adv, stats = group_advantages(rewards, groups, scale_by_std=False)
    assert close(adv, [-2.0, 0.0, 0.0, 0.0, 2.0, 0.0, -2.0, 2.0])
    assert (stats.groups, stats.equal_reward_groups, stats.singleton_groups) == (4, 1, 1)


def test_equal_reward_groups_give_zeros_and_are_counted():
    for scale in (True, False):
        adv, stats = group_advantages(torch.tensor([0.5, 0.5, 2.0, 2.0, 2.0]), torch.tensor([7, 7, 3, 3, 3]), scale_by_std=scale)
        assert torch.equal(adv, torch.zeros(5))
        assert (stats.groups, stats.equal_reward_groups, stats.singleton_groups) == (2, 2, 0)


def test_singleton_groups_give_zeros_and_are_counted():
    # G = 1 must not silently become plain REINFORCE on the raw reward
    for scale in (True, False):
        adv, stats = group_advantages(torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0, 1, 2]), scale_by_std=scale)
        assert torch.equal(adv, torch.zeros(3))
        assert (stats.groups, stats.equal_reward_groups, stats.singleton_groups) == (3, 0, 3)


@pytest.mark.parametrize("value,size", [(0.1, 8), (0.3, 6), (0.7, 16)])
def test_equal_non_binary_rewards_are_recognised(value, size):
    adv, stats = group_advantages(torch.full((size,), value), torch.zeros(size, dtype=torch.long))
    assert stats.equal_reward_groups == 1
    assert torch.equal(adv, torch.zeros(size))


def test_group_advantages_docstring_example_holds():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(group_advantages, "group_advantages", globs={"torch": torch, "group_advantages": group_advantages}):
        runner.run(test, out=lambda _: None)
    assert runner.failures == 0


# ----- clipped policy loss -------------------------------------------------------------
def ratios(values: list[list[float]]) -> torch.Tensor:
    """log-probs whose ratio to old log-probs of 0 is `values`."""
    return torch.log(torch.tensor(values))


def test_clipped_loss_inside_and_outside_the_clip_range():
    logps = ratios([[1.1, 1.5, 0.5], [0.5, 1.5, 0.9]])
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -2.0])
    loss, clipped = clipped_policy_loss(logps, old, adv, clip_eps=0.2)
    # row 0, A=+1: 1.1 inside -> -1.1; 1.5 clipped to 1.2 -> -1.2;
    #   0.5: min(0.5, 0.8) = 0.5 (pessimistic, not clipped) -> -0.5
    # row 1, A=-2: 0.5: min(-1.0, -1.6) = -1.6 (clipped at 0.8) -> 1.6;
    #   1.5: min(-3.0, -2.4) = -3.0 (not clipped) -> 3.0; 0.9 inside -> 1.8
    assert close(loss, [[-1.1, -1.2, -0.5], [1.6, 3.0, 1.8]])
    assert torch.equal(clipped, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_clipped_tokens_get_no_gradient():
    logps = ratios([[1.1, 1.5], [0.5, 0.9]]).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = clipped_policy_loss(logps, torch.zeros(2, 2), adv, clip_eps=0.2)
    loss.sum().backward()
    # d(-ratio * A)/d logp = -ratio * A where unclipped; 0 where clipped
    assert close(logps.grad, [[-1.1, 0.0], [0.0, 0.9]])
    assert torch.equal(clipped, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_clip_eps_high_widens_only_the_upper_side():
    logps = ratios([[1.25, 0.7], [1.25, 0.7]])
    adv = torch.tensor([1.0, -1.0])
    sym, sym_clipped = clipped_policy_loss(logps, torch.zeros(2, 2), adv, clip_eps=0.2)
    asym, asym_clipped = clipped_policy_loss(logps, torch.zeros(2, 2), adv, clip_eps=0.2, clip_eps_high=0.28)
    # A=+1, ratio 1.25: clipped to 1.2 symmetric, inside [0.8, 1.28] with clip-higher
    # A=+1, ratio 0.7: pessimistic min keeps 0.7 either way
    # A=-1, ratio 1.25: min(-1.25, -1.2 or -1.25) = -1.25 either way
    # A=-1, ratio 0.7: lower side clips to 0.8 in both settings
    assert close(sym, [[-1.2, -0.7], [1.25, 0.8]])
    assert close(asym, [[-1.25, -0.7], [1.25, 0.8]])
    assert torch.equal(sym_clipped, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(asym_clipped, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_ratio_one_is_the_plain_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0]])
    loss, clipped = clipped_policy_loss(logps, logps.clone(), torch.tensor([0.5]))
    assert close(loss, [[-0.5, -0.5]])
    assert not clipped.any()


# ----- KL to the reference -------------------------------------------------------------
def test_kl_is_zero_when_policy_equals_reference():
    logps = torch.tensor([[-0.1, -2.0, -5.0]])
    assert torch.equal(kl_to_reference(logps, logps.clone()), torch.zeros(1, 3))


def test_kl_k3_formula_by_hand():
    # p = 0.5, ref = 0.25: delta = log(ref/p) = log 0.5; k3 = 0.5 - log 0.5 - 1
    logps = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    expected = [0.5 - math.log(0.5) - 1, 2.0 - math.log(2.0) - 1]  # 0.19315, 0.30685
    assert close(kl_to_reference(logps, ref), [expected])


def test_kl_is_positive_when_they_differ():
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(4, 6, generator=g) * 3
    ref = -torch.rand(4, 6, generator=g) * 3
    kl = kl_to_reference(logps, ref)
    assert (kl > 0).all()


# ----- aggregation ---------------------------------------------------------------------
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
NORM = Normaliser(sequences=2, tokens=3, max_len=2)


def test_aggregate_sequence_mean():
    # per sequence: (1+2)/2 = 1.5 and 4/1 = 4; mean over 2 sequences = 2.75
    assert aggregate(PER_TOKEN, MASK, "sequence_mean", NORM).item() == pytest.approx(2.75)


def test_aggregate_token_mean():
    # (1 + 2 + 4) / 3 completion tokens
    assert aggregate(PER_TOKEN, MASK, "token_mean", NORM).item() == pytest.approx(7 / 3)


def test_aggregate_fixed_length():
    # (1 + 2 + 4) / (2 sequences * max length 2)
    assert aggregate(PER_TOKEN, MASK, "fixed_length", NORM).item() == pytest.approx(7 / 4)


def test_aggregate_unknown_mode_names_it():
    with pytest.raises(ValueError, match="'mean_of_means'"):
        aggregate(PER_TOKEN, MASK, "mean_of_means", NORM)


@pytest.mark.parametrize("mode", ["sequence_mean", "token_mean", "fixed_length"])
def test_micro_batches_sum_to_the_full_batch(mode):
    g = torch.Generator().manual_seed(1)
    per_token = torch.randn(5, 7, generator=g)  # (B, T)
    lengths = [7, 2, 5, 1, 4]
    mask = torch.zeros(5, 7)
    for i, n in enumerate(lengths):
        mask[i, 7 - n :] = 1.0  # completions at the end, as after a prompt
    norm = Normaliser(sequences=5, tokens=sum(lengths), max_len=max(lengths))
    full = aggregate(per_token, mask, mode, norm)
    parts = sum(aggregate(per_token[i : i + 2], mask[i : i + 2], mode, norm) for i in range(0, 5, 2))
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)


# ----- padding and credit --------------------------------------------------------------
def test_completion_mask_right_aligns_every_completion_in_the_window():
    samples = [
        Sample(adapter="x", prompt_ids=[1, 2, 3], completion_ids=[4, 5], advantage=1.0),
        Sample(adapter="x", prompt_ids=[6], completion_ids=[7], advantage=-1.0),
    ]
    assert completion_mask(samples).tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_left_pad_gives_positions_as_generation_saw_them():
    ids, attention, positions = left_pad([[1, 2, 3], [6]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 6]]
    assert attention.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_window_logprobs_match_a_full_unpadded_forward_at_each_samples_temperature():
    from multiagent_rl.models import tiny_model
    from trainers.policy import window_logprobs

    class Tok:
        vocab = 50

        def __len__(self):
            return self.vocab

        bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

    model = tiny_model(Tok()).eval()
    samples = [  # pad (2) equals a completion's end token: it stays in the window
        Sample(adapter="x", prompt_ids=[5, 6, 7, 8], completion_ids=[9, 10, 2], advantage=1.0, temperature=0.7),
        Sample(adapter="x", prompt_ids=[11], completion_ids=[12], advantage=1.0),
        Sample(adapter="x", prompt_ids=[11], completion_ids=[13], advantage=1.0, temperature=0.0),  # greedy: at 1
    ]
    mask = completion_mask(samples)
    with torch.no_grad():
        window = window_logprobs(model, samples, pad_id=2)  # (3, 3)
        for row, s in enumerate(samples):
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = model(input_ids=ids).logits[0, :-1] / (s.temperature or 1.0)  # (L-1, V)
            full = torch.log_softmax(logits, -1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1)
            assert torch.allclose(window[row][mask[row].bool()], full[-len(s.completion_ids):], atol=1e-5)
            assert (window[row][~mask[row].bool()] == 0).all()


def test_discounted_credit():
    assert discounted_credit(2.0, round_index=2, last_round=2, gamma=0.5) == 2.0
    assert discounted_credit(2.0, round_index=1, last_round=2, gamma=0.5) == 1.0
    assert discounted_credit(2.0, round_index=0, last_round=2, gamma=0.5) == 0.5
    assert discounted_credit(-1.0, round_index=0, last_round=3, gamma=0.9) == pytest.approx(-0.729)
    assert discounted_credit(3.0, round_index=0, last_round=4, gamma=1.0) == 3.0
    assert discounted_credit(2.0, round_index=5, last_round=2, gamma=0.5) == 2.0  # never amplified


def test_split_and_chunks_cover_every_sample_once():
    items = list(range(7))
    assert [list(p) for p in policy._split(items, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [list(p) for p in policy._split(items, 10)] == [[i] for i in items]
    assert [list(c) for c in policy._chunks(items, 4)] == [[0, 1, 2, 3], [4, 5, 6]]
