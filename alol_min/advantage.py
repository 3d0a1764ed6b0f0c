"""Advantages of the reference policy, the "leftover" data they select, and priority sampling.

    A(x, y) = R(x, y, *) - V_ref(x)

A is the advantage of the *frozen* pi_ref, so it is computed once before training and never
re-estimated for pi_theta (docs/method.md §5). Points with A <= 0 are discarded: the leftovers, a
share p of the data (~0.67 for HHA), are sampled with probability (docs/method.md §6)

    p_i = max(A_i, 0) / sum_j max(A_j, 0)

i.i.d. *with replacement*, so a batch may repeat an index, as in the paper's inverse-CDF
sampler. Every sampler here takes an explicit torch.Generator and draws on the CPU.

Multi-process training: every rank seeds its own generator with the same seed, draws the same
*global* batch each step, and keeps `rank_slice(batch, rank, world_size)`. The ranks' slices are
disjoint positions of one i.i.d. batch that together cover it, so N ranks train on exactly the
batch one process would have drawn. `WeightedSampler(..., rank=, world_size=)` does this.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

SAMPLER_KINDS = ("uniform", "reward", "advantage", "positive_uniform")
"""uniform: all points alike; reward: p ~ R (wBC, R-GOLD, R-LoL); advantage: p ~ A+ (A-LoL's
priority sampling, the code's `good_priority`); positive_uniform: uniform over A > 0 (`good_random`)."""


def _check_finite(x, name: str) -> None:
    finite = (
        torch.isfinite(x).all()
        if isinstance(x, Tensor)
        else np.isfinite(np.asarray(x, float)).all()
    )
    if not finite:
        raise ValueError(f"{name} contains NaN or inf")


def compute_advantage(reward, value):
    """A = R - V_ref(x), elementwise. numpy in -> numpy out, torch in -> torch out (detached:
    A is a constant for the policy). reward and value must have the same shape."""
    if tuple(np.shape(reward)) != tuple(np.shape(value)):
        raise ValueError(
            f"reward shape {tuple(np.shape(reward))} != value shape {tuple(np.shape(value))}"
        )
    _check_finite(reward, "reward")
    _check_finite(value, "value")
    if isinstance(reward, Tensor):
        value = torch.as_tensor(value, dtype=reward.dtype, device=reward.device)
        return (reward - value).detach()
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(reward) - np.asarray(value)


def leftover_fraction(advantage) -> float:
    """p = share of points with A > 0: the data A-LoL actually trains on."""
    a = torch.as_tensor(advantage)
    if a.numel() == 0:
        raise ValueError("advantage is empty")
    _check_finite(a, "advantage")
    return (a > 0).double().mean().item()


def sampling_weights(
    kind: str, *, reward=None, advantage=None, num_examples: int | None = None
) -> Tensor:
    """Unnormalised sampling weights w [N] (float64, CPU); p_i = w_i / sum_j w_j.

        uniform            w_i = 1                 (N from num_examples, reward or advantage)
        reward             w_i = R_i               (needs R >= 0)
        advantage          w_i = max(A_i, 0)       (A-LoL priority sampling)
        positive_uniform   w_i = 1[A_i > 0]

    Raises ValueError if the kind is unknown, its input is missing or has NaN, or every weight
    is 0 (e.g. no point with positive advantage).
    """
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler kind {kind!r}; valid kinds: {', '.join(SAMPLER_KINDS)}")
    if kind == "uniform":
        given = next((x for x in (reward, advantage) if x is not None), None)
        if num_examples is None and given is None:
            raise ValueError("sampler 'uniform' needs num_examples, reward or advantage")
        w = torch.ones(len(given) if num_examples is None else num_examples, dtype=torch.float64)
    else:
        name = "reward" if kind == "reward" else "advantage"
        x = reward if kind == "reward" else advantage
        if x is None:
            raise ValueError(f"sampler {kind!r} needs {name}")
        x = torch.as_tensor(x, dtype=torch.float64).detach().cpu().reshape(-1)
        _check_finite(x, name)
        if kind == "reward" and (x < 0).any():
            raise ValueError(
                f"sampler 'reward' needs R >= 0 (p ~ R), got min R = {x.min().item():.4g}"
            )
        if kind == "reward":
            w = x
        elif kind == "advantage":
            w = x.clamp(min=0.0)
        else:
            w = (x > 0).double()
        if not (w > 0).any():
            raise ValueError(
                f"sampler {kind!r}: every weight is 0, nothing to sample (no {name} > 0)"
            )
    return w


def draw_batch(weights: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """batch_size indices i.i.d. with replacement, P(i) = w_i / sum_j w_j.  [batch_size] int64

    A point with w_i = 0 is never drawn. Same generator state -> same batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if weights.dim() != 1 or (weights < 0).any() or not (weights > 0).any():
        raise ValueError("weights must be a 1-D tensor of non-negative numbers, not all 0")
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)


def rank_slice(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's share of a global batch: batch[rank::world_size].

    Slices of all ranks are disjoint and cover the batch; the batch size must be a multiple of
    world_size so every rank gets the same number of examples.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if len(batch) % world_size:
        raise ValueError(
            f"global batch size {len(batch)} is not a multiple of world_size {world_size}"
        )
    return batch[rank::world_size]


class WeightedSampler:
    """Batch sampler: yields `num_batches` index lists, each this rank's slice of a global batch
    of `batch_size` drawn by `draw_batch`. Works as `DataLoader(dataset, batch_sampler=...)`.

    All ranks must pass generators seeded alike (see the module docstring). Iterating again
    continues the generator's stream; it does not replay the same batches.
    """

    def __init__(
        self,
        weights: Tensor,
        batch_size: int,
        generator: torch.Generator,
        num_batches: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of world_size {world_size}"
            )
        self.weights, self.batch_size, self.generator = weights, batch_size, generator
        self.num_batches, self.rank, self.world_size = num_batches, rank, world_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            batch = draw_batch(self.weights, self.batch_size, self.generator)
            yield rank_slice(batch, self.rank, self.world_size).tolist()


def scaled_step_budget(steps: int, positive_fraction: float) -> int:
    """int(steps * p), at least 1: A-LoL trains only on the leftover share p of the data, so the
    HHA trainer gives it int(9000 p) optimiser steps instead of 9000 (docs/method.md §6)."""
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    return max(1, int(steps * positive_fraction))
