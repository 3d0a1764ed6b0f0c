"""Importance weights r = pi_theta(y|x) / pi_ref(y|x): values, clipping, stop-gradient, overflow."""

import math

import pytest
import torch

from alol_min.importance import (
    clip_fraction,
    sequence_importance_weight,
    sequence_log_ratio,
    token_importance_weights,
    validate_log_probs,
)


def tiny():
    """Two responses of 3 and 2 tokens; padding holds garbage that must never be read."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, float("nan")]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0, -0.7], [-0.4, -0.2, -float("inf")]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, ref, mask


def test_sequence_log_ratio_sums_response_tokens_only():
    logp, ref, mask = tiny()
    expected = [(-1.0 + 1.5) + (-2.0 + 1.0) + (-0.5 + 0.7), (-0.1 + 0.4) + 0.0]
    assert sequence_log_ratio(logp, ref, mask).tolist() == pytest.approx(expected)
    assert sequence_log_ratio(logp, ref, mask.bool()).tolist() == pytest.approx(expected)


def test_sequence_weight_is_clamped_exp_and_detached():
    logp, ref, mask = tiny()
    logp.requires_grad_(True)
    log_r = [-0.3, 0.3]
    w = sequence_importance_weight(logp, ref, mask, clip=0.2)
    assert not w.requires_grad
    assert w.tolist() == pytest.approx([max(math.exp(-0.3), 0.8), min(math.exp(0.3), 1.2)])
    assert sequence_importance_weight(logp, ref, mask, clip=None).tolist() == pytest.approx(
        [math.exp(x) for x in log_r]
    )
    assert sequence_importance_weight(logp, ref, mask, clip=0.0).tolist() == [1.0, 1.0]
    assert sequence_importance_weight(logp, ref, mask, clip=0.9).tolist() == pytest.approx(
        [math.exp(x) for x in log_r]
    )  # inside [0.1, 1.9]: untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_512_token_sequences_stay_finite(dtype):
    far = torch.full((2, 512), -1e4, dtype=dtype)
    near = torch.full((2, 512), -1e-3, dtype=dtype)
    mask = torch.ones(2, 512)
    logp, ref = torch.stack([far[0], near[0]]), torch.stack([near[1], far[1]])  # r ~ e^-5e6, e^+5e6
    w = sequence_importance_weight(logp, ref, mask, clip=0.9)
    assert torch.isfinite(w).all()
    assert w.tolist() == pytest.approx([0.1, 1.9])
    w_free = sequence_importance_weight(logp, ref, mask, clip=None)
    assert torch.isfinite(w_free).all() and (w_free[0] < 1e-10) and (w_free[1] > 1e10)
    rho = token_importance_weights(logp, ref, mask, clip=None)
    assert torch.isfinite(rho).all()
    assert clip_fraction(logp, ref, mask, clip=0.9) == 1.0


def test_token_weights_clamped_detached_zero_on_padding():
    logp, ref, mask = tiny()
    logp.requires_grad_(True)
    rho = token_importance_weights(logp, ref, mask, clip=0.5)
    assert not rho.requires_grad
    # token log rho = 0.5, -1.0, 0.2 | 0.3, 0.0, padding -> clipped to [0.5, 1.5]
    expected = [[1.5, 0.5, math.exp(0.2)], [math.exp(0.3), 1.0, 0.0]]
    assert rho.tolist()[0] == pytest.approx(expected[0])
    assert rho.tolist()[1] == pytest.approx(expected[1])
    rho = token_importance_weights(logp, ref, mask, clip=0.1)
    assert rho[mask.bool()].min() >= 0.9 - 1e-12 and rho.max() <= 1.1 + 1e-12
    assert rho[1, 2] == 0.0


def test_clip_fraction():
    logp, ref, mask = tiny()  # sequence log r = -0.3, 0.3; token log rho = 0.5, -1.0, 0.2, 0.3, 0.0
    assert clip_fraction(logp, ref, mask, clip=0.2) == 1.0
    assert clip_fraction(logp, ref, mask, clip=0.5) == 0.0
    assert clip_fraction(logp, ref, mask, clip=None) == 0.0
    assert clip_fraction(logp, ref, mask, clip=0.0) == 1.0
    # exp(0.5)=1.65 >= 1.3, exp(-1)=0.37 <= 0.7, exp(0.3)=1.35 >= 1.3; exp(0.2), exp(0) inside
    assert clip_fraction(logp, ref, mask, clip=0.3, per_token=True) == pytest.approx(3 / 5)


def test_shape_mismatch_raises():
    logp, ref, mask = tiny()
    with pytest.raises(ValueError, match="ref_logp shape"):
        sequence_log_ratio(logp, ref[:, :2], mask)
    with pytest.raises(ValueError, match="mask shape"):
        sequence_importance_weight(logp, ref, mask[:1])
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        token_importance_weights(logp[0], ref[0], mask[0])


def test_nan_on_response_token_raises_but_nan_on_padding_is_ignored():
    logp, ref, mask = tiny()
    validate_log_probs(logp, mask, ref)  # NaN sits on padding: fine
    logp[0, 1] = float("nan")
    with pytest.raises(ValueError, match="logp has NaN"):
        sequence_importance_weight(logp, ref, mask)
    logp, ref, mask = tiny()
    ref[1, 0] = float("nan")
    with pytest.raises(ValueError, match="ref_logp has NaN"):
        token_importance_weights(logp, ref, mask)


def test_negative_clip_raises():
    logp, ref, mask = tiny()
    with pytest.raises(ValueError, match="clip"):
        sequence_importance_weight(logp, ref, mask, clip=-0.1)
