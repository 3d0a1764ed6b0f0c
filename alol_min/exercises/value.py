"""Exercises on the value estimate V_ref(x): how much of the reward any V can explain (the noise
ceiling), and the ridge fit on pi_ref's prompt states (docs/method.md §5)."""

from __future__ import annotations

import numpy as np
import torch

from alol_min.exercises.checker import Case, Exercise, compare_parts
from alol_min.values import _ridge, noise_ceiling

# ---- 10. the noise ceiling ---------------------------------------------------------------------


def noise_ceiling_r2(samples: np.ndarray) -> float:
    """The reference: the R^2 ceiling of any V from k sampled rewards per prompt ([N, k])."""
    return noise_ceiling(samples)["ceiling_r2"]


def _rewards(n: int, k: int, between: float, within: float = 1.0):
    def make(g):
        prompt_effect = between * torch.randn(n, 1, generator=g, dtype=torch.float64)
        noise = within * torch.randn(n, k, generator=g, dtype=torch.float64)
        return {"samples": (prompt_effect + noise).numpy()}

    return make


NOISE_CEILING = Exercise(
    "noise ceiling of V's R^2",
    noise_ceiling_r2,
    [
        Case("40 prompts, k = 4", _rewards(40, 4, 1.0),
             "s_w^2 = mean over prompts of the variance of a prompt's k rewards (ddof=1); s_b^2 = "
             "variance of the prompt means (ddof=1) - s_w^2 / k; ceiling = s_b^2 / (s_b^2 + s_w^2 / k)"),
        Case("k = 2", _rewards(60, 2, 0.5),
             "the mean of k noisy rewards still carries s_w^2 / k of noise: subtract it from the "
             "variance of the means"),
        Case("k = 8, strong prompt effect", _rewards(30, 8, 3.0), "use k = samples.shape[1]"),
        Case("no prompt effect at all", _rewards(50, 3, 0.0),
             "s_b^2 cannot be negative: floor the corrected between-prompt variance at 0"),
        Case("a single reward per prompt", lambda g: {"samples": np.ones((5, 1))},
             "with k = 1 the within-prompt variance is unknown: raise ValueError"),
    ],
    "noise_ceiling_r2(samples) -> float",
    rtol=1e-6,
)  # fmt: skip


# ---- 11. the ridge value fit ---------------------------------------------------------------------


def fit_ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """The reference: weight w and bias b of V(z) = z w + b, min ||y - b - z w||^2 + alpha ||w||^2
    with the bias left unpenalised (b = mean y on standardised features z)."""
    return _ridge(z, y, alpha)


def _features(n: int, d: int, alpha: float):
    def make(g):
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        z = (z - z.mean(0)) / z.std(0)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        y = 0.7 + z @ w / d**0.5 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        return {"z": z.numpy(), "y": y.numpy(), "alpha": alpha}

    return make


RIDGE_VALUE = Exercise(
    "ridge fit of V_ref",
    fit_ridge,
    [
        Case("more prompts than features", _features(50, 6, 1.0),
             "w = (Z^T Z + alpha I)^-1 Z^T (y - mean y), b = mean y: centre y, do not penalise b"),
        Case("strong regularisation", _features(40, 5, 1e4),
             "a large alpha shrinks w towards 0 but leaves b = mean y"),
        Case("more features than prompts", _features(8, 20, 3.0),
             "the same solution exists with d > n: (Z^T Z + alpha I) is still invertible for alpha > 0"),
    ],
    "fit_ridge(z, y, alpha) -> (weight, bias)",
    compare=compare_parts(("weight", "bias"), atol=1e-8),
)  # fmt: skip
