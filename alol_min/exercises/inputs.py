"""Random inputs for the checkers, from an explicit generator: batches of per-token log-probs on
the importance.py contract ([B, T] grids with a right-padded response mask)."""

from __future__ import annotations

import torch

PAD_VALUES = {"zero": 0.0, "-inf": float("-inf"), "NaN": float("nan")}
"""Fixed padding values; "junk" (the default) fills padding with random finite log-probs, as a
model's forward does, so that an answer that ignores the mask is caught."""


def response_mask(g: torch.Generator, batch: int, width: int, min_len: int = 1) -> torch.Tensor:
    """[B, T] float mask of right-padded responses; row 0 is full length, the others random."""
    lengths = torch.randint(min_len, width + 1, (batch,), generator=g)
    lengths[0] = width
    return (torch.arange(width)[None, :] < lengths[:, None]).float()


def log_probs(
    g: torch.Generator,
    batch: int = 4,
    width: int = 6,
    spread: float = 0.3,
    pad: str = "junk",
    grad: bool = True,
) -> dict:
    """logp, ref_logp, mask: log-probs in (-4, 0), pi_ref off pi_theta by about `spread` nats a
    token, and padding holding PAD_VALUES[pad] (or, for "junk", other random log-probs)."""
    mask = response_mask(g, batch, width)
    logp = -4 * torch.rand(batch, width, generator=g)
    ref = (logp + spread * torch.randn(batch, width, generator=g)).clamp(max=-1e-3)
    if pad == "junk":
        fill_logp = -4 * torch.rand(batch, width, generator=g)
        fill_ref = -4 * torch.rand(batch, width, generator=g)
    else:
        fill_logp = fill_ref = torch.full((batch, width), PAD_VALUES[pad])
    logp = torch.where(mask.bool(), logp, fill_logp)
    ref = torch.where(mask.bool(), ref, fill_ref)
    return {"logp": logp.requires_grad_(grad), "ref_logp": ref, "mask": mask}


def advantages(g: torch.Generator, batch: int, sign: str = "mixed") -> torch.Tensor:
    """[B] advantages: "mixed" (some <= 0, row 0 > 0), "positive" or "non-positive"."""
    a = torch.randn(batch, generator=g)
    if sign == "positive":
        return a.abs() + 0.05
    if sign == "non-positive":
        a = -a.abs()
        a[0] = 0.0
        return a
    a[0] = a[0].abs() + 0.1
    a[-1] = -a[-1].abs() - 0.1
    return a
