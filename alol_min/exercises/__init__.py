"""Exercises with checkers: write a piece of A-LoL or a baseline, and be told what is wrong.

    from alol_min.exercises import check_importance_weight

    def importance_weight(logp, ref_logp, mask, clip):
        ...                                    # your answer
    check_importance_weight(importance_weight)  # a CheckResult: it displays as what it found

Each checker runs your function and the library's on the same inputs: random batches from a fixed
seed, then the edge cases that catch the usual mistakes (padding, A <= 0, the clip bounds, a
missing detach). It names the first case that differs, with the expected and the actual values and
a hint. A function that raises NotImplementedError gets "not implemented yet".

| checker                    | you write                                     | reference              |
|----------------------------|-----------------------------------------------|------------------------|
| check_importance_weight    | r_hat = sg[clip(r, 1 +- eps)]                 | importance.py          |
| check_a_lol_loss           | A+ sg[clip(r)] NLL                            | losses.a_lol_loss      |
| check_a_lol_seq_loss       | A+ sum_t sg[clip(rho_t)] l_t                  | losses.a_lol_seq_loss  |
| check_a_lol_kl_loss        | A+ NLL + beta (log pi_theta - log pi_ref)     | losses.a_lol_kl_loss   |
| check_priority_sampling    | p_i = A+_i / sum_j A+_j                       | advantage.py           |
| check_alol_step            | one training step: draw, weight, loss, update | exercises.alol         |
| check_noise_ceiling        | the R^2 ceiling of any V                      | values.noise_ceiling   |
| check_ridge_value          | V_ref's ridge fit                             | values._ridge          |
| check_dpo_loss             | -log sigma(beta h)                            | losses.dpo_loss        |
| check_ppo_surrogate        | PPO's clipped surrogate                       | ppo.policy_loss        |
| check_gae                  | generalised advantage estimation              | ppo.gae                |
"""

from __future__ import annotations

from functools import partial

from alol_min.exercises.alol import (
    A_LOL_KL_LOSS,
    A_LOL_LOSS,
    A_LOL_SEQ_LOSS,
    ALOL_STEP,
    IMPORTANCE_WEIGHT,
    PRIORITY_SAMPLING,
    ToyLM,
    response_log_probs,
)
from alol_min.exercises.baselines import DPO_LOSS, GAE, PPO_SURROGATE
from alol_min.exercises.checker import CheckResult, Exercise, run_exercise
from alol_min.exercises.value import NOISE_CEILING, RIDGE_VALUE

EXERCISES: dict[str, Exercise] = {
    "importance_weight": IMPORTANCE_WEIGHT,
    "a_lol_loss": A_LOL_LOSS,
    "a_lol_seq_loss": A_LOL_SEQ_LOSS,
    "a_lol_kl_loss": A_LOL_KL_LOSS,
    "priority_sampling": PRIORITY_SAMPLING,
    "alol_step": ALOL_STEP,
    "noise_ceiling": NOISE_CEILING,
    "ridge_value": RIDGE_VALUE,
    "dpo_loss": DPO_LOSS,
    "ppo_surrogate": PPO_SURROGATE,
    "gae": GAE,
}


def check(name: str, fn) -> CheckResult:
    """Check `fn` as the answer to exercise `name` (a key of EXERCISES)."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; choose from {', '.join(EXERCISES)}")
    return run_exercise(EXERCISES[name], fn)


check_importance_weight = partial(check, "importance_weight")
check_a_lol_loss = partial(check, "a_lol_loss")
check_a_lol_seq_loss = partial(check, "a_lol_seq_loss")
check_a_lol_kl_loss = partial(check, "a_lol_kl_loss")
check_priority_sampling = partial(check, "priority_sampling")
check_alol_step = partial(check, "alol_step")
check_noise_ceiling = partial(check, "noise_ceiling")
check_ridge_value = partial(check, "ridge_value")
check_dpo_loss = partial(check, "dpo_loss")
check_ppo_surrogate = partial(check, "ppo_surrogate")
check_gae = partial(check, "gae")

__all__ = ["EXERCISES", "CheckResult", "ToyLM", "check", "response_log_probs"] + [
    f"check_{name}" for name in EXERCISES
]
