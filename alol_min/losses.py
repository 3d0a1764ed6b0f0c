"""Every method's per-example loss L_i (docs/method.md §7); the trainer takes the batch mean.

Notation (paper / spec): l_t = -log pi_theta(y_t | x, y_<t) on response tokens,
NLL_theta = sum_t l_t (summed over tokens, never averaged: docs/method.md §7.4), R the sequence
reward, A = R - V_ref(x) the reference-policy advantage, A+ = max(A, 0), sg[.] a stop-gradient,
r = pi_theta(y|x) / pi_ref(y|x) the sequence importance weight, rho_t its per-token analogue,
clip(., 1 +- eps) the clamp of `importance.py`.

    nll             NLL_theta
    wbc             R * NLL_theta
    r_gold          R * sum_t sg[max(pi_theta(y_t|.), u)] * l_t              (u = gold_floor)
    r_lol           R * sg[clip(r)] * NLL_theta
    a_lol           A+ * sg[clip(r)] * NLL_theta
    a_lol_ref_free  A+ * NLL_theta
    a_lol_seq       A+ * sum_t sg[clip(rho_t)] * l_t
    a_lol_kl        A+ * NLL_theta + beta * (log pi_theta(y|x) - log pi_ref(y|x))
    dpo, dpo_ref_free, pro      pairwise: see `pairwise_loss`
    ppo             online, the paper's contrast: its clipped surrogate is in `ppo.py`

Ablations (docs/method.md §11, claims 3-4), registered in METHODS with ablation=True:
    a_lol_no_clamp     A * sg[clip(r)] * NLL_theta with A allowed negative, sampled uniformly:
                       tests the claim that discarding negative-advantage data matters.
    a_lol_good_random  the a_lol loss, sampled uniformly over A > 0 (the code's `good_random`)
                       instead of proportionally to A+: priority vs. uniform over leftovers.

Every weight (R, A, r, rho_t, pi_theta(y_t)) is a constant, so each gradient is a weighted
score function, e.g. a_lol: dL_i/dlogp_t = -A+ * clip(r) * mask_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from alol_min.importance import (
    sequence_importance_weight,
    sequence_log_ratio,
    token_importance_weights,
    validate_log_probs,
)


@dataclass(frozen=True)
class MethodSpec:
    """What a method needs from the pipeline, and how the trainer runs it: the training loop reads
    only these fields, never a method's name."""

    name: str
    """Key in METHODS and the `method` argument of method_loss / pairwise_loss."""
    label: str
    """Display name in tables and figures."""
    sampler: str
    """Training-data sampling: a kind of `advantage.sampling_weights` ("uniform": shuffled /
    uniform over all points; "reward": p ~ R; "advantage": p ~ A+; "positive_uniform":
    uniform over A > 0)."""
    needs_ref: bool
    """Needs pi_ref's per-token log-probs (ref_logp)."""
    needs_value: bool
    """Needs the value estimate V_ref(x), i.e. the advantage A."""
    pairwise: bool = False
    """Trains on (chosen, rejected) pairs through `pairwise_loss`."""
    importance: str | None = None
    """The clipped importance weight the loss uses: "sequence" (r), "token" (rho_t) or None. It
    decides whether `OfflineConfig.clip` applies and which clip fraction is logged."""
    scales_steps: bool = False
    """Samples the leftovers only, so runs int(steps * p) steps and validates every
    int(eval_every * p), p = leftover fraction (the paper's budget for every such sampler)."""
    ablation: bool = False
    """Not a method of the paper's tables; a variant for an ablation (docs/method.md)."""
    rewards_per_pair: int = 0
    """Rewards the method reads per training pair (0: none, as NLL and DPO; 2: the chosen and
    the rejected reply's, as PRO): the reward calls its training set costs."""
    online: bool = False
    """Samples its own responses during training (PPO, `ppo.train_ppo`), so it has no offline
    loss here."""


def _m(name, label, sampler, ref, value, **kw):
    return MethodSpec(name, label, sampler, needs_ref=ref, needs_value=value, **kw)


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in [
        _m("nll", "NLL", "uniform", False, False),
        _m("wbc", "wBC", "reward", False, False, rewards_per_pair=1),
        _m("r_gold", "R-GOLD", "reward", False, False, rewards_per_pair=1),
        _m("r_lol", "R-LoL", "reward", True, False, importance="sequence", rewards_per_pair=1),
        _m("a_lol", "A-LoL", "advantage", True, True, importance="sequence", scales_steps=True,
           rewards_per_pair=1),
        _m("a_lol_ref_free", "A-LoL ref-free", "advantage", False, True, scales_steps=True,
           rewards_per_pair=1),
        _m("a_lol_seq", "A-LoL seq", "advantage", True, True, importance="token", scales_steps=True,
           rewards_per_pair=1),
        _m("a_lol_kl", "A-LoL KL", "advantage", True, True, scales_steps=True, rewards_per_pair=1),
        _m("dpo", "DPO", "uniform", True, False, pairwise=True),
        _m("dpo_ref_free", "DPO ref-free", "uniform", False, False, pairwise=True),
        _m("pro", "PRO", "uniform", False, False, pairwise=True, rewards_per_pair=2),
        _m("ppo", "PPO", "online", True, False, online=True),
        _m("a_lol_no_clamp", "A-LoL (A<0 kept)", "uniform", True, True, importance="sequence",
           ablation=True, rewards_per_pair=1),
        _m("a_lol_good_random", "A-LoL (uniform A>0)", "positive_uniform", True, True,
           importance="sequence", scales_steps=True, ablation=True, rewards_per_pair=1),
    ]
}  # fmt: skip


def method_spec(method: str) -> MethodSpec:
    """The registry entry of `method`; an unknown name is a ValueError listing the valid ones."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method]


def sequence_nll(logp: Tensor, mask: Tensor) -> Tensor:
    """NLL_theta = -sum_t mask_t * logp_t = -log pi_theta(y|x).  [B]"""
    return -torch.where(mask.bool(), logp, 0.0).sum(dim=-1)


def nll_loss(logp: Tensor, mask: Tensor) -> Tensor:
    """L = NLL_theta (SFT / behaviour cloning)."""
    return sequence_nll(logp, mask)


def wbc_loss(logp: Tensor, mask: Tensor, reward: Tensor) -> Tensor:
    """L = R * NLL_theta (reward-weighted behaviour cloning)."""
    return reward * sequence_nll(logp, mask)


def r_gold_loss(logp: Tensor, mask: Tensor, reward: Tensor, gold_floor: float = 0.1) -> Tensor:
    """L = R * sum_t sg[max(pi_theta(y_t|.), u)] * l_t: GOLD's per-token weight of the *current*
    policy, floored at u = gold_floor (0.1 here; GOLD used 0.1, 0.15 or 0.2), with the sequence
    reward R on every token."""
    w = logp.detach().exp().clamp(min=gold_floor)
    return reward * -torch.where(mask.bool(), w * logp, 0.0).sum(dim=-1)


def r_lol_loss(logp, mask, ref_logp, reward, clip: float | None = 0.9) -> Tensor:
    """L = R * sg[clip(r, 1 +- eps)] * NLL_theta: A-LoL with the reward in place of A+."""
    return (
        reward * sequence_importance_weight(logp, ref_logp, mask, clip) * sequence_nll(logp, mask)
    )


def a_lol_loss(
    logp, mask, ref_logp, advantage, clip: float | None = 0.9, clamp_advantage: bool = True
) -> Tensor:
    """L = A+ * sg[clip(r, 1 +- eps)] * NLL_theta,  A+ = max(A, 0).

    Gradient: -A+ * clip(r) * grad log pi_theta(y|x), the paper's eq. 1 with a bounded weight.
    clamp_advantage=False keeps negative A (the a_lol_no_clamp ablation): such points are
    pushed *down* with weight |A| * clip(r).

    Two differences from the paper's HHA code, both deliberate:
    - The code recomputes A online from pi_ref's hidden states every step (docs/method.md §7.4);
      here A is precomputed once: pi_ref and V_ref are frozen, so it is the same number (up
      to the value head's dropout noise, which the code leaves on).
    - The code runs a second frozen pi_ref forward every step for NLL_ref; here pi_ref's
      per-token log-probs are precomputed once and the caller passes them from a cache as
      `ref_logp` (pi_ref never changes, so the result is identical and a step costs one
      forward instead of two).
    """
    a = advantage.clamp(min=0.0) if clamp_advantage else advantage
    return a * sequence_importance_weight(logp, ref_logp, mask, clip) * sequence_nll(logp, mask)


def a_lol_ref_free_loss(logp, mask, advantage) -> Tensor:
    """L = A+ * NLL_theta: A-LoL with the importance weight set to 1 (no pi_ref forward)."""
    return advantage.clamp(min=0.0) * sequence_nll(logp, mask)


def a_lol_seq_loss(logp, mask, ref_logp, advantage, clip: float | None = 0.9) -> Tensor:
    """L = A+ * sum_t sg[clip(rho_t, 1 +- eps)] * l_t,  rho_t = pi_theta(y_t|.) / pi_ref(y_t|.).

    Per-token ratios instead of one sequence ratio: each stays near 1, so less saturates.
    """
    rho = token_importance_weights(logp, ref_logp, mask, clip)
    return advantage.clamp(min=0.0) * -torch.where(mask.bool(), rho * logp, 0.0).sum(dim=-1)


def a_lol_kl_loss(logp, mask, ref_logp, advantage, kl_beta: float) -> Tensor:
    """L = A+ * NLL_theta + beta * (log pi_theta(y|x) - log pi_ref(y|x)).

    The KL term is a one-sample estimate on the dataset response and is differentiable through
    pi_theta; there is no importance weight (the HHA code runs it as a_lol with eps = 0).
    Gradient: -(A+ - beta) * grad log pi_theta(y|x), i.e. ref-free A-LoL with A+ shifted down by
    beta, so points with 0 < A < beta are pushed down (docs/method.md §7).
    """
    kl = sequence_log_ratio(logp, ref_logp, mask)
    return advantage.clamp(min=0.0) * sequence_nll(logp, mask) + kl_beta * kl


# ---- pairwise methods -------------------------------------------------------------------


def dpo_loss(
    logp_chosen,
    mask_chosen,
    logp_rejected,
    mask_rejected,
    ref_logp_chosen=None,
    ref_logp_rejected=None,
    beta: float = 0.1,
) -> Tensor:
    """L = -log sigma(beta * [(log pi_theta(y_w) - log pi_theta(y_l))
                              - (log pi_ref(y_w) - log pi_ref(y_l))])

    with log-probs summed over response tokens. ref_logp_* = None drops the pi_ref term
    (DPO ref-free). -log sigma(h) is computed as softplus(-h), which never overflows.
    """
    h = sequence_nll(logp_rejected, mask_rejected) - sequence_nll(logp_chosen, mask_chosen)
    if ref_logp_chosen is not None:
        h = h - (
            sequence_nll(ref_logp_rejected, mask_rejected)
            - sequence_nll(ref_logp_chosen, mask_chosen)
        )
    return F.softplus(-beta * h)


def pro_loss(
    logp_chosen,
    mask_chosen,
    logp_rejected,
    mask_rejected,
    reward_chosen,
    reward_rejected,
    sft_weight: float = 0.05,
) -> Tensor:
    """PRO with a ranking of length 2; candidate 0 = chosen (ranked first), 1 = rejected.

        s_k  = (1/|y_k|) sum_t log pi_theta(y_k,t|.)         length-normalised score
        T    = r_0 - r_1                                     reward gap as temperature
        L    = log(1e-10 + e^{s_0 T} + e^{s_1 T}) - s_0 T    + sft_weight * NLL_theta(y_0)

    The SFT target is the chosen response (PRO's `sft_index` = 0); PRO's factor (n-1)^2 is 1
    for n = 2. The log-sum-exp is computed stably. T comes from the data's rewards as given:
    if the reward model prefers the rejected response, T < 0 and the ranking term flips.
    """
    scores = []
    for logp, mask in ((logp_chosen, mask_chosen), (logp_rejected, mask_rejected)):
        length = mask.bool().sum(dim=-1).clamp(min=1)  # an empty response scores 0
        scores.append(-sequence_nll(logp, mask) / length)
    temperature = reward_chosen - reward_rejected
    s0t, s1t = scores[0] * temperature, scores[1] * temperature
    log_eps = torch.full_like(s0t, math.log(1e-10))
    ranking = torch.logsumexp(torch.stack([log_eps, s0t, s1t]), dim=0) - s0t
    return ranking + sft_weight * sequence_nll(logp_chosen, mask_chosen)


def reward_logit(reward: Tensor, max_total: float, eps: float = 1e-4) -> Tensor:
    """s = logit(R / max_total), R / max_total clamped to [eps, 1 - eps].

    A reward given as R = sigmoid(s) (a Bradley-Terry or single-label reward model) is mapped back
    to its raw logit s, the scale on which the paper's code takes PRO's temperature T = s_0 - s_1.
    A reward that is a sum of scores (chitchat) is mapped to the logit of its mean score. The
    clamp bounds |s| by logit(1 - eps) = 9.2 at eps = 1e-4, so a saturated reward gives a large
    but finite temperature.
    """
    if not max_total > 0:
        raise ValueError(f"reward_logit needs max_total > 0, got {max_total}")
    p = (reward / max_total).clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def dpo_implicit_rewards(
    logp_chosen, mask_chosen, logp_rejected, mask_rejected,
    ref_logp_chosen=None, ref_logp_rejected=None, beta: float = 0.1,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """DPO's implicit rewards r_w = beta * log(pi_theta(y_w) / pi_ref(y_w)) and r_l likewise
    (TRL's rewards/chosen and rewards/rejected; without pi_ref, beta * log pi_theta)."""
    r_w, r_l = -sequence_nll(logp_chosen, mask_chosen), -sequence_nll(logp_rejected, mask_rejected)
    if ref_logp_chosen is not None:
        r_w = r_w + sequence_nll(ref_logp_chosen, mask_chosen)
        r_l = r_l + sequence_nll(ref_logp_rejected, mask_rejected)
    return beta * r_w, beta * r_l


# ---- entry points -----------------------------------------------------------------------


def _spec(method: str, pairwise: bool) -> MethodSpec:
    spec = method_spec(method)
    if spec.online:
        raise ValueError(f"method {method!r} trains online and has no offline loss: see ppo.py")
    if spec.pairwise != pairwise:
        entry, other = (
            ("pairwise_loss", "method_loss") if pairwise else ("method_loss", "pairwise_loss")
        )
        valid = [m for m, s in METHODS.items() if s.pairwise == pairwise]
        raise ValueError(
            f"method {method!r} is not for {entry} (use {other}); {entry} takes: {', '.join(valid)}"
        )
    return spec


def _per_example(x, name: str, method: str, like: Tensor) -> Tensor:
    """A per-example scalar (R or A) as a constant [B] tensor; raises if missing, misshapen or NaN."""
    if x is None:
        raise ValueError(f"method {method!r} needs {name}")
    x = torch.as_tensor(x).detach().to(device=like.device, dtype=like.dtype)
    if x.shape != like.shape[:1]:
        raise ValueError(
            f"{name} must have shape [B] = {tuple(like.shape[:1])}, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf (method {method!r})")
    return x


def _ref(ref_logp, name: str, method: str) -> Tensor:
    if ref_logp is None:
        raise ValueError(f"method {method!r} needs {name} (pi_ref's per-token log-probs)")
    return ref_logp.detach()


def method_loss(
    method: str,
    *,
    logp: Tensor,
    mask: Tensor,
    ref_logp: Tensor | None = None,
    reward=None,
    advantage=None,
    clip: float | None = 0.9,
    kl_beta: float = 0.0,
    gold_floor: float = 0.1,
) -> Tensor:
    """Per-example loss L_i [B] of a single-response method (see the module docstring).

    logp, ref_logp, mask: [B, T] per-token response log-probs and mask (importance.py contract);
    reward, advantage: [B]. clip is eps for r_lol, a_lol, a_lol_seq and the a_lol ablations;
    kl_beta is only used by a_lol_kl (and must be > 0 there); gold_floor only by r_gold.
    Arguments a method does not use are ignored. The trainer takes the batch mean.
    """
    spec = _spec(method, pairwise=False)
    validate_log_probs(logp, mask, ref_logp)
    ref = _ref(ref_logp, "ref_logp", method) if spec.needs_ref else None
    if method == "nll":
        return nll_loss(logp, mask)
    if method in ("wbc", "r_gold", "r_lol"):
        r = _per_example(reward, "reward", method, logp)
        if method == "wbc":
            return wbc_loss(logp, mask, r)
        if method == "r_gold":
            return r_gold_loss(logp, mask, r, gold_floor)
        return r_lol_loss(logp, mask, ref, r, clip)
    a = _per_example(advantage, "advantage", method, logp)
    if method in ("a_lol", "a_lol_good_random", "a_lol_no_clamp"):
        return a_lol_loss(logp, mask, ref, a, clip, clamp_advantage=method != "a_lol_no_clamp")
    if method == "a_lol_ref_free":
        return a_lol_ref_free_loss(logp, mask, a)
    if method == "a_lol_seq":
        return a_lol_seq_loss(logp, mask, ref, a, clip)
    if method == "a_lol_kl":
        if not kl_beta > 0:
            raise ValueError(
                f"method 'a_lol_kl' needs kl_beta > 0, got {kl_beta} "
                "(with kl_beta = 0 it is a_lol_ref_free)"
            )
        return a_lol_kl_loss(logp, mask, ref, a, kl_beta)
    raise AssertionError(f"METHODS entry {method!r} has no loss")  # registry out of step


def pairwise_loss(
    method: str,
    *,
    logp_chosen: Tensor,
    mask_chosen: Tensor,
    logp_rejected: Tensor,
    mask_rejected: Tensor,
    ref_logp_chosen: Tensor | None = None,
    ref_logp_rejected: Tensor | None = None,
    reward_chosen=None,
    reward_rejected=None,
    beta: float = 0.1,
    sft_weight: float = 0.05,
) -> Tensor:
    """Per-pair loss [B] of "dpo", "dpo_ref_free" or "pro" (see dpo_loss, pro_loss).

    Chosen and rejected may have different lengths T_w, T_l but share the batch size B.
    beta is DPO's; reward_* and sft_weight are PRO's. dpo_ref_free ignores ref_logp_*.
    """
    spec = _spec(method, pairwise=True)
    validate_log_probs(logp_chosen, mask_chosen, ref_logp_chosen)
    validate_log_probs(logp_rejected, mask_rejected, ref_logp_rejected)
    if logp_chosen.shape[0] != logp_rejected.shape[0]:
        raise ValueError(
            f"chosen batch size {logp_chosen.shape[0]} != "
            f"rejected batch size {logp_rejected.shape[0]}"
        )
    if method == "pro":
        r_w = _per_example(reward_chosen, "reward_chosen", method, logp_chosen)
        r_l = _per_example(reward_rejected, "reward_rejected", method, logp_chosen)
        return pro_loss(
            logp_chosen, mask_chosen, logp_rejected, mask_rejected, r_w, r_l, sft_weight
        )
    ref_w = _ref(ref_logp_chosen, "ref_logp_chosen", method) if spec.needs_ref else None
    ref_l = _ref(ref_logp_rejected, "ref_logp_rejected", method) if spec.needs_ref else None
    return dpo_loss(logp_chosen, mask_chosen, logp_rejected, mask_rejected, ref_w, ref_l, beta)
