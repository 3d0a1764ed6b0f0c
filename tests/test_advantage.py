"""Advantages, leftovers and the seeded samplers (priority, uniform-positive, reward, uniform)."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from alol_min.advantage import (
    WeightedSampler,
    compute_advantage,
    draw_batch,
    leftover_fraction,
    rank_slice,
    sampling_weights,
    scaled_step_budget,
)

A = torch.tensor([0.5, -0.2, 1.5, 0.0, 1.0, -1.0, 0.25])
R = torch.tensor([0.1, 0.0, 0.6, 0.3, 1.0, 0.2, 0.05])
DRAWS = 20_000


def draws(kind, seed=901, **inputs):
    weights = sampling_weights(kind, **inputs)
    return draw_batch(weights, DRAWS, torch.Generator().manual_seed(seed))


def assert_frequencies(idx, probs):
    """Only points with p > 0 are drawn, at frequencies a chi-square test accepts."""
    counts = torch.bincount(idx, minlength=len(probs)).double()
    assert counts[probs == 0].sum() == 0
    support = probs > 0
    expected = probs[support].double() / probs[support].double().sum() * len(idx)
    result = chisquare(counts[support].numpy(), expected.numpy())
    assert result.pvalue > 1e-3, result


def test_compute_advantage_keeps_the_input_type():
    a = compute_advantage(np.array([1.0, 0.2]), np.array([0.4, 0.5]))
    assert isinstance(a, np.ndarray) and a == pytest.approx([0.6, -0.3])
    value = torch.tensor([0.4, 0.5], requires_grad=True)
    a = compute_advantage(torch.tensor([1.0, 0.2]), value)
    assert isinstance(a, torch.Tensor) and not a.requires_grad
    assert a.tolist() == pytest.approx([0.6, -0.3])


def test_compute_advantage_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        compute_advantage(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="value contains NaN"):
        compute_advantage(torch.ones(2), torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="reward contains NaN"):
        compute_advantage(np.array([np.nan, 1.0]), np.ones(2))


def test_leftover_fraction():
    assert leftover_fraction(A) == pytest.approx(4 / 7)  # A = 0 is not a leftover
    assert leftover_fraction(np.array([-1.0, 2.0])) == 0.5
    with pytest.raises(ValueError, match="empty"):
        leftover_fraction([])


def test_priority_sampler_draws_proportional_to_positive_advantage():
    idx = draws("advantage", advantage=A)
    assert not (A[idx] <= 0).any()
    a_plus = A.clamp(min=0).double()
    assert_frequencies(idx, a_plus / a_plus.sum())


def test_same_seed_same_draws_other_seed_other_draws():
    assert torch.equal(draws("advantage", advantage=A), draws("advantage", advantage=A))
    assert not torch.equal(draws("advantage", advantage=A), draws("advantage", seed=0, advantage=A))


def test_uniform_over_positive_points():
    idx = draws("positive_uniform", advantage=A)
    positive = (A > 0).double()
    assert_frequencies(idx, positive / positive.sum())


def test_reward_sampler():
    idx = draws("reward", reward=R)
    assert_frequencies(idx, R.double() / R.sum())
    with pytest.raises(ValueError, match="R >= 0"):
        sampling_weights("reward", reward=torch.tensor([0.5, -0.1]))


def test_uniform_sampler():
    idx = draws("uniform", num_examples=len(A))
    assert_frequencies(idx, torch.full((len(A),), 1 / len(A), dtype=torch.float64))
    assert sampling_weights("uniform", advantage=A).tolist() == [1.0] * len(A)


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="no advantage > 0"):
        sampling_weights("advantage", advantage=torch.tensor([-1.0, 0.0]))
    with pytest.raises(ValueError, match="no advantage > 0"):
        sampling_weights("positive_uniform", advantage=[-1.0, 0.0])
    with pytest.raises(ValueError, match="unknown sampler kind 'softmax'.*positive_uniform"):
        sampling_weights("softmax", advantage=A)
    with pytest.raises(ValueError, match="needs advantage"):
        sampling_weights("advantage", reward=R)
    with pytest.raises(ValueError, match="advantage contains NaN"):
        sampling_weights("advantage", advantage=[0.3, float("nan")])
    with pytest.raises(ValueError, match="not all 0"):
        draw_batch(torch.zeros(3), 4, torch.Generator().manual_seed(0))


def test_ranks_draw_one_global_batch_and_split_it():
    weights = sampling_weights("advantage", advantage=A)
    world_size, global_batch, steps = 4, 8, 5
    samplers = [
        WeightedSampler(
            weights,
            global_batch,
            torch.Generator().manual_seed(7),
            steps,
            rank=rank,
            world_size=world_size,
        )
        for rank in range(world_size)
    ]
    single = list(WeightedSampler(weights, global_batch, torch.Generator().manual_seed(7), steps))
    per_rank = [list(s) for s in samplers]
    for step in range(steps):
        slices = [per_rank[rank][step] for rank in range(world_size)]
        assert all(len(s) == global_batch // world_size for s in slices)
        # positions rank::world_size are disjoint and cover the batch one process would draw
        rebuilt = [slices[pos % world_size][pos // world_size] for pos in range(global_batch)]
        assert rebuilt == single[step]
    positions = [
        set(rank_slice(torch.arange(global_batch), r, world_size).tolist())
        for r in range(world_size)
    ]
    assert set().union(*positions) == set(range(global_batch))
    assert sum(len(p) for p in positions) == global_batch
    with pytest.raises(ValueError, match="multiple of world_size"):
        rank_slice(torch.arange(6), 0, 4)


def test_weighted_sampler_feeds_a_dataloader():
    data = torch.utils.data.TensorDataset(torch.arange(len(A)))
    sampler = WeightedSampler(
        sampling_weights("advantage", advantage=A),
        4,
        torch.Generator().manual_seed(0),
        num_batches=3,
    )
    batches = [b[0] for b in torch.utils.data.DataLoader(data, batch_sampler=sampler)]
    assert len(batches) == 3 and all(len(b) == 4 and (A[b] > 0).all() for b in batches)


def test_scaled_step_budget():
    assert scaled_step_budget(9000, 0.677) == 6093  # the HHA A-LoL budget, int(9000 p)
    assert scaled_step_budget(900, 0.677) == 609
    assert scaled_step_budget(10, 0.0) == 1
    assert scaled_step_budget(10, 1.0) == 10
    with pytest.raises(ValueError, match="positive_fraction"):
        scaled_step_budget(10, 1.5)
