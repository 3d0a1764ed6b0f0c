"""Importance weights between the trained policy pi_theta and the frozen reference pi_ref.

A-LoL treats the whole response y as one action, so its importance weight is a ratio of
sequence probabilities (the paper's A-LoL gradient; docs/method.md §2):

    r = pi_theta(y|x) / pi_ref(y|x) = exp( sum_t [log pi_theta(y_t|.) - log pi_ref(y_t|.)] )

The weight only scales the gradient: it is clamped to [1 - eps, 1 + eps] and then detached
(a stop-gradient `sg[.]`), so the update is -A+ * sg[clip(r)] * grad log pi_theta(y|x). This is
not PPO's min(unclipped, clipped): clipping bounds the weight and never zeroes the gradient.
A-LoL seq instead uses one ratio per token, rho_t = pi_theta(y_t|.) / pi_ref(y_t|.), each
clipped on its own.

Input contract for every function here:
    logp, ref_logp  [B, T]  per-token log-probs of the response tokens under pi_theta / pi_ref
    mask            [B, T]  1 (or True) on response tokens, 0 on padding and prompt
Positions where mask is 0 are never read, so padding may hold anything (even NaN or -inf).
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_RATIO_BOUND = 50.0
"""|log r| is capped here before exp(): a 128-token sequence ratio overflows float32 easily
(docs/method.md §3), and e^50 is far outside any clip range, so the cap never changes a clipped
weight."""


def validate_log_probs(logp: Tensor, mask: Tensor, ref_logp: Tensor | None = None) -> Tensor:
    """Check the [B, T] input contract and return the mask as a bool tensor.

    Raises ValueError on a shape mismatch or on NaN at a response (mask = 1) position.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T] per-token log-probs, got shape {tuple(logp.shape)}")
    if mask.shape != logp.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != logp shape {tuple(logp.shape)}")
    mask = mask.bool()
    for name, x in (("logp", logp), ("ref_logp", ref_logp)):
        if x is None:
            continue
        if x.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(x.shape)} != logp shape {tuple(logp.shape)}")
        if torch.isnan(x.detach()).logical_and(mask).any():
            raise ValueError(f"{name} has NaN at response positions (mask = 1)")
    return mask


def _check_clip(clip: float | None) -> None:
    if clip is not None and clip < 0:
        raise ValueError(f"clip (epsilon) must be >= 0 or None, got {clip}")


def _token_log_ratio(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """logp_t - ref_logp_t in at least float32, so a bf16 model still sums its ratio exactly."""
    dtype = torch.promote_types(logp.dtype, torch.float32)
    return logp.to(dtype) - ref_logp.to(dtype)


def sequence_log_ratio(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """log r = log pi_theta(y|x) - log pi_ref(y|x) = sum_t mask_t (logp_t - ref_logp_t).  [B]

    Differentiable through `logp` (A-LoL KL uses it as its one-sample KL estimate).
    """
    mask = validate_log_probs(logp, mask, ref_logp)
    # torch.where, not mask * (...): padding may hold -inf, and 0 * inf = NaN.
    return torch.where(mask, _token_log_ratio(logp, ref_logp), 0.0).sum(dim=-1)


def _clamp_weight(log_w: Tensor, clip: float | None) -> Tensor:
    """sg[clip(exp(log_w), 1 - eps, 1 + eps)], computed without overflow."""
    w = log_w.detach().clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).exp()
    if clip is not None:
        w = w.clamp(1.0 - clip, 1.0 + clip)
    return w


def sequence_importance_weight(
    logp: Tensor, ref_logp: Tensor, mask: Tensor, clip: float | None = 0.9
) -> Tensor:
    """r_hat = sg[clip(r, 1 - eps, 1 + eps)],  r = exp(log pi_theta(y|x) - log pi_ref(y|x)).  [B]

    clip = eps (the paper's HHA default 0.9 keeps r in [0.1, 1.9]); clip = None means no
    clipping (the generic trainer's default), clip = 0 fixes r_hat = 1. The result is always
    detached and finite (|log r| <= LOG_RATIO_BOUND).
    """
    _check_clip(clip)
    return _clamp_weight(sequence_log_ratio(logp, ref_logp, mask), clip)


def token_importance_weights(
    logp: Tensor, ref_logp: Tensor, mask: Tensor, clip: float | None = 0.9
) -> Tensor:
    """rho_hat_t = sg[clip(rho_t, 1 - eps, 1 + eps)],  rho_t = exp(logp_t - ref_logp_t).  [B, T]

    Per-token ratios for A-LoL seq; 0 where mask = 0. Detached, like the sequence weight.
    """
    _check_clip(clip)
    mask = validate_log_probs(logp, mask, ref_logp)
    rho = _clamp_weight(torch.where(mask, _token_log_ratio(logp, ref_logp), 0.0), clip)
    return torch.where(mask, rho, 0.0)


def clipped_share(log_ratio: Tensor, clip: float | None) -> float:
    """Share of the weights r = exp(log_ratio) sitting at a clip bound (r <= 1 - eps or r >= 1 + eps).

    0.0 with clip = None (nothing is clipped) or no weights; 1.0 with clip = 0.
    """
    _check_clip(clip)
    if clip is None or log_ratio.numel() == 0:
        return 0.0
    w = _clamp_weight(log_ratio, None)
    return ((w <= 1.0 - clip) | (w >= 1.0 + clip)).float().mean().item()


def clip_fraction(
    logp: Tensor, ref_logp: Tensor, mask: Tensor, clip: float | None, *, per_token: bool = False
) -> float:
    """Share of importance weights sitting at a clip bound (`clipped_share`), for logging (docs/method.md §11, claim 5).

    per_token=False looks at the sequence weights r (A-LoL, R-LoL); per_token=True at the
    per-token rho_t of response tokens (A-LoL seq).
    """
    if per_token:
        mask = validate_log_probs(logp, mask, ref_logp)
        return clipped_share(_token_log_ratio(logp, ref_logp)[mask], clip)
    return clipped_share(sequence_log_ratio(logp, ref_logp, mask), clip)
