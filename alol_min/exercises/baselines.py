"""Exercises on the methods A-LoL is compared with: DPO's loss, and PPO's clipped surrogate and
GAE (docs/method.md §7; Rafailov et al. 2023; Schulman et al. 2016, 2017)."""

from __future__ import annotations

import torch

from alol_min.exercises.checker import Case, Exercise, compare_parts
from alol_min.exercises.inputs import log_probs, response_mask
from alol_min.losses import dpo_loss
from alol_min.ppo import gae, policy_loss

MASK_HINT = "sum (or average) over response tokens only: use the mask, and torch.where where padding may hold -inf"

# ---- 7. DPO ------------------------------------------------------------------------------------


def _pair(
    spread: float = 0.3, pad: str = "zero", widths=(6, 6), beta: float = 0.1, margin: float = 0.0
):
    def make(g):
        w = log_probs(g, width=widths[0], spread=spread, pad=pad)
        lo = log_probs(g, width=widths[1], spread=spread, pad=pad)
        if margin:  # the rejected reply's first token `margin` nats less likely under pi_theta
            shifted = lo["logp"].detach().clone()
            shifted[:, 0] -= margin
            lo["logp"] = shifted.requires_grad_(True)
        return {"logp_chosen": w["logp"], "mask_chosen": w["mask"], "logp_rejected": lo["logp"],
                "mask_rejected": lo["mask"], "ref_logp_chosen": w["ref_logp"],
                "ref_logp_rejected": lo["ref_logp"], "beta": beta}  # fmt: skip

    return make


DPO_LOSS = Exercise(
    "DPO loss",
    dpo_loss,
    [
        Case("random pairs, beta = 0.1", _pair(), "L = -log sigmoid(beta * h), h = (log pi(y_w) - log "
             "pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l)), each log pi summed over its reply's tokens",
             grad_of="logp_chosen"),
        Case("chosen and rejected of different lengths", _pair(widths=(7, 4)),
             "chosen and rejected have their own masks and widths: sum each over its own tokens",
             grad_of="logp_rejected"),
        Case("padding holds -inf", _pair(pad="-inf"), MASK_HINT, grad_of="logp_chosen"),
        Case("a margin of 30 nats, beta = 1", _pair(beta=1.0, margin=30.0),
             "-log sigmoid(x) = softplus(-x): 1 - sigmoid(x) rounds to 0 for x >> 0 in float32, so "
             "-log(sigmoid(x)) gives 0 where the loss is about e^-x", grad_of="logp_chosen"),
        Case("a margin of -400 nats, beta = 1", _pair(beta=1.0, margin=-400.0),
             "-log sigmoid(x) = softplus(-x) = log(1 + exp(-x)): log(sigmoid(x)) underflows to -inf "
             "for x << 0", grad_of="logp_chosen"),
    ],
    "dpo_loss(logp_chosen, mask_chosen, logp_rejected, mask_rejected, ref_logp_chosen, "
    "ref_logp_rejected, beta) -> L [B]",
    rtol=1e-4,
    atol=0.0,  # relative only: a loss of e^-30 must not pass as 0
)  # fmt: skip


# ---- 8. PPO's clipped surrogate ----------------------------------------------------------------


def _surrogate(sign: str = "mixed", spread: float = 0.3, cliprange: float = 0.2, pad: float = 0.0):
    def make(g):
        x = log_probs(g, batch=5, width=6, spread=spread)
        adv = torch.randn(5, 6, generator=g)
        if sign == "positive":
            adv = adv.abs()
        elif sign == "negative":
            adv = -adv.abs()
        adv = torch.where(x["mask"].bool(), adv, pad)
        return {"logp": x["logp"], "old_logp": x["ref_logp"], "advantages": adv,
                "mask": x["mask"], "cliprange": cliprange}  # fmt: skip

    return make


def ppo_policy_loss(logp, old_logp, advantages, mask, cliprange):
    """The reference: the clipped surrogate's mean over response tokens (ppo.policy_loss)."""
    return policy_loss(logp, old_logp, advantages, mask, cliprange)[0]


PPO_SURROGATE = Exercise(
    "PPO clipped surrogate",
    ppo_policy_loss,
    [
        Case("rho = 1 (the first minibatch)", lambda g: {**_surrogate()(g), "old_logp": None},
             "with pi_theta = pi_old, rho = 1 and the loss is -mean_t A_t over response tokens",
             grad_of="logp"),
        Case("random, mixed signs of A", _surrogate(),
             "loss_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)): the max of the two "
             "negated terms (the min of the objectives), per token, then the mean over response tokens",
             grad_of="logp"),
        Case("A < 0 and rho far from 1", _surrogate("negative", spread=1.0),
             "take the max of the two losses, not the min: for A < 0 a rho above 1 + eps keeps "
             "its gradient (-A rho is the larger term), and below 1 - eps the clipped term wins, "
             "so the gradient is 0", grad_of="logp"),
        Case("A > 0 and rho far from 1", _surrogate("positive", spread=1.0),
             "clip rho, never the advantage; rho = exp(logp - old_logp) per token", grad_of="logp"),
        Case("padding holds large advantages", _surrogate(pad=50.0),
             "average over response tokens only: sum of mask * loss_t divided by the sum of the mask",
             grad_of="logp"),
    ],
    "ppo_policy_loss(logp, old_logp, advantages, mask, cliprange) -> scalar loss",
)  # fmt: skip


def _first_minibatch(inputs):  # rho = 1: old_logp is logp itself, as a constant
    if inputs.get("old_logp") is None:
        inputs["old_logp"] = inputs["logp"].detach().clone()
    return inputs


PPO_SURROGATE.runner = lambda fn, inputs: fn(**_first_minibatch(inputs))


# ---- 9. GAE ------------------------------------------------------------------------------------


def _gae_case(gamma: float, lam: float, pad_values: bool = False):
    def make(g):
        mask = response_mask(g, 4, 7, min_len=2)
        rewards = 0.1 * torch.randn(4, 7, generator=g) * mask
        rewards[torch.arange(4), mask.cumsum(1).argmax(1)] += torch.rand(4, generator=g)
        values = torch.rand(4, 7, generator=g)
        if not pad_values:
            values = values * mask
        return {"rewards": rewards, "values": values, "mask": mask, "gamma": gamma, "lam": lam}

    return make


GAE = Exercise(
    "GAE",
    gae,
    [
        Case("gamma = 1, lambda = 0.95", _gae_case(1.0, 0.95),
             "delta_t = r_t + gamma V_{t+1} - V_t; A_t = delta_t + gamma lambda A_{t+1}, computed "
             "backwards from the last response token; returns G_t = A_t + V_t"),
        Case("lambda = 1: Monte Carlo", _gae_case(1.0, 1.0),
             "with gamma = lambda = 1, A_t = (sum of r from t on) - V_t"),
        Case("lambda = 0: one-step TD", _gae_case(0.9, 0.0),
             "with lambda = 0, A_t = r_t + gamma V_{t+1} - V_t"),
        Case("gamma = 0.9, lambda = 0.95", _gae_case(0.9, 0.95),
             "the recursion carries gamma too: A_t = delta_t + gamma * lambda * A_{t+1}"),
        Case("values past the end of a response are not 0", _gae_case(1.0, 0.95, pad_values=True),
             "V = 0 after a response's final token: never bootstrap from a padding position's value, "
             "and give advantages and returns 0 outside the mask"),
    ],
    "gae(rewards, values, mask, gamma, lam) -> (advantages, returns)",
    compare=compare_parts(("advantages", "returns")),
)  # fmt: skip
