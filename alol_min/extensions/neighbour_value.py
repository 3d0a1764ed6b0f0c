"""Not in the paper: a V_ref that borrows pi_ref's replies to similar prompts.

The paper's V_ref reads only pi_ref's states of the prompt (`values.py`). `NeighbourValue` adds
T(x), the reward of x paired with the replies pi_ref gave to the fit prompts most like x, and fits
the ridge on both (docs/method.md §4.3). Fit it with `fit_neighbour_value`, select it with
`ValueConfig(estimator="neighbours")`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from alol_min.values import (
    RidgeValue,
    ValueConfig,
    add_heldout_r2,
    check_targets,
    heldout_split,
    pooled_features,
)


class NeighbourValue(nn.Module):
    """V(x) = clip(w . [z(x), T(x)] + b, 0, R_max): ridge on the pooled states and on T(x), the reward of
    x paired with the replies pi_ref gave to the fit prompts most like x.

        u(x)   = z(x) / |z(x)|,  z = (phi(x) - mean) / scale        (phi: `pooled_features`)
        N_m(x) = the m fit prompts j with the largest u(x) . u(x_j)   (x itself left out while fitting)
        T_c(x) = 1/(m r) sum_{j in N_m(x)} sum_{y in Y_j} R_c(x, y)   for every reward output c

    V estimates E_{y ~ pi_ref(.|x)} R(x, y). A new prompt has no pi_ref replies, so T borrows r of
    those pi_ref gave to each of m similar fit prompts (Y_j) and scores them *with x*: where a part of
    the reward reads the pair (chitchat's relevance), T says how well pi_ref's typical reply to such a
    prompt fits this one. Not in the paper. It costs m r reward calls per prompt and needs a large
    bank of fit prompts (RESULTS.md and bench/value_neighbours.py have its numbers). Leaving x out is by
    bank row: a prompt text that occurs twice in the fit set borrows its twin's replies.

    The state dict holds the bank's texts too (`get_extra_state`); `NeighbourValue.load` rebuilds V
    from it and the reward.
    """

    def __init__(
        self,
        n_features: int,
        max_value: float,
        neighbours: int = 32,
        replies_per_neighbour: int = 4,
        n_bank: int = 0,
        n_outputs: int = 0,
    ):
        super().__init__()
        self.max_value = float(max_value)
        self.neighbours, self.replies_per_neighbour = neighbours, replies_per_neighbour
        for name in ("mean", "scale"):
            self.register_buffer(name, torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("bank_units", torch.zeros(n_bank, n_features, dtype=torch.float64))
        self.bank_prompts: list[str] = []  # x_j, the fit prompts, in the bank's row order
        self.bank_replies: np.ndarray = np.zeros(
            (0, 0), dtype=object
        )  # Y_j: [n_fit, r] reply texts
        self.reward = None
        self.outputs: list[str] = []  # the reward's outputs c, in T's column order
        self.ridge = RidgeValue(n_features + n_outputs, max_value)

    def get_extra_state(self) -> dict:
        return {
            "bank_prompts": list(self.bank_prompts),
            "bank_replies": self.bank_replies.tolist(),
            "outputs": list(self.outputs),
            "neighbours": self.neighbours,
            "replies_per_neighbour": self.replies_per_neighbour,
        }

    def set_extra_state(self, state: dict) -> None:
        self.bank_prompts, self.outputs = list(state["bank_prompts"]), list(state["outputs"])
        self.bank_replies = np.array(state["bank_replies"], dtype=object).reshape(
            len(self.bank_prompts), -1
        )
        self.neighbours, self.replies_per_neighbour = (
            state["neighbours"],
            state["replies_per_neighbour"],
        )

    @classmethod
    def load(cls, state_dict: dict, reward, max_value: float) -> "NeighbourValue":
        """The V whose `state_dict()` this is, scoring with `reward` (not saved: pass the one it was fit with)."""
        extra = state_dict["_extra_state"]
        value = cls(
            len(state_dict["mean"]),
            max_value,
            extra["neighbours"],
            extra["replies_per_neighbour"],
            n_bank=len(extra["bank_prompts"]),
            n_outputs=len(extra["outputs"]),
        )
        value.load_state_dict(state_dict)
        value.__dict__["reward"] = reward
        return value

    def fit(
        self,
        states: list[torch.Tensor],
        prompts,
        replies,
        targets: np.ndarray,
        reward,
        seed: int = 0,
        progress: bool = False,
    ) -> "NeighbourValue":
        """Keep the fit prompts' units and replies as the bank, then ridge on [phi, T] (T leaving each prompt out)."""
        replies = np.asarray(replies, dtype=object)
        if replies.ndim != 2 or len(replies) != len(states) or len(prompts) != len(states):
            raise ValueError(
                f"NeighbourValue.fit needs one prompt and a row of k replies per prompt: got "
                f"{len(states)} states, {len(prompts)} prompts, replies of shape {replies.shape}"
            )
        phi = pooled_features(states)
        self.mean.copy_(torch.as_tensor(phi.mean(0)))
        self.scale.copy_(torch.as_tensor(phi.std(0) + 1e-6))
        self.bank_units = torch.as_tensor(self._units(phi))
        self.bank_prompts, self.bank_replies = (
            list(prompts),
            replies[:, : self.replies_per_neighbour],
        )
        self.outputs = []  # set from the reward's first scores
        self.__dict__["reward"] = (
            reward  # a plain attribute even if the reward is an nn.Module: not in the state dict
        )
        features = np.c_[
            phi,
            self.borrowed(
                self.bank_prompts, self.bank_units.numpy(), leave_out_self=True, progress=progress
            ),
        ]
        self.ridge = RidgeValue(features.shape[1], self.max_value).fit(
            features, np.asarray(targets, float), seed=seed
        )
        return self

    def _units(self, phi: np.ndarray) -> np.ndarray:
        z = (phi - self.mean.numpy()) / self.scale.numpy()
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def borrowed(
        self,
        prompts: list[str],
        units: np.ndarray,
        leave_out_self: bool = False,
        progress: bool = False,
        chunk: int = 256,
    ) -> np.ndarray:
        """T(x) [N, n_outputs]: the mean of each reward output over x paired with its neighbours' replies.

        `leave_out_self`: `prompts` are the bank's own (`bank_prompts`, same order); row i skips bank row i.
        """

        bank = self.bank_units.numpy()
        if leave_out_self and len(prompts) != len(bank):
            raise ValueError(
                f"leave_out_self needs the bank's own {len(bank)} prompts, got {len(prompts)}"
            )
        m = min(
            self.neighbours, len(bank) - 1
        )  # the same m while fitting (x left out) and predicting
        if m < 1:
            raise ValueError(f"NeighbourValue needs at least 2 fit prompts, got {len(bank)}")
        r = self.bank_replies.shape[1]
        rows = []
        for start in tqdm(
            range(0, len(prompts), chunk), desc="V: borrowed replies", disable=not progress
        ):
            similarity = units[start : start + chunk] @ bank.T
            if leave_out_self:  # while fitting, prompt i is bank row i
                at = np.arange(len(similarity))
                similarity[at, start + at] = -np.inf
            near = np.argpartition(-similarity, m - 1, axis=1)[:, :m]
            pairs_x = [x for x in prompts[start : start + chunk] for _ in range(m * r)]
            scores = self.reward(pairs_x, list(self.bank_replies[near].reshape(-1)))
            self.outputs = self.outputs or sorted(scores)
            rows.append(
                np.stack(
                    [
                        np.asarray(scores[c], float).reshape(len(near), m * r).mean(1)
                        for c in self.outputs
                    ],
                    axis=1,
                )
            )
            if not np.isfinite(rows[-1]).all():
                bad = start + int(np.argwhere(~np.isfinite(rows[-1]))[0, 0])
                raise ValueError(
                    f"the reward gave a non-finite score for prompt {bad} ({prompts[bad][:60]!r}) "
                    "with its neighbours' replies"
                )
        return np.concatenate(rows)

    def predict(self, states: list[torch.Tensor], prompts=None) -> np.ndarray:
        """V(x) for `prompt_states` output and the same prompts' texts."""
        if prompts is None or len(prompts) != len(states):
            raise ValueError(
                "the 'neighbours' V needs each prompt's text beside its states: predict(states, prompts)"
                " (run.prepare.reference_pass(..., prompts=...))"
            )
        phi = pooled_features(states)
        return self.ridge.predict_features(
            np.c_[phi, self.borrowed(list(prompts), self._units(phi))]
        )


def fit_neighbour_value(
    states: list[torch.Tensor],
    targets,
    max_value: float,
    cfg: ValueConfig,
    progress: bool = False,
    heldout: list[int] | None = None,
    *,
    prompts=None,
    replies=None,
    reward=None,
) -> tuple[NeighbourValue, dict]:
    """`values.fit_value` for the "neighbours" estimator: it also needs the prompts' texts, pi_ref's
    replies ([N, k], the ones the targets are the rewards of) and the reward. The held-out prompts'
    replies never enter its bank."""
    if prompts is None or replies is None or reward is None:
        raise ValueError(
            "the 'neighbours' V needs fit_neighbour_value(..., prompts=, replies=, reward=)"
        )
    targets = check_targets(targets)
    held, rest = heldout_split(len(states), cfg, heldout)
    estimator = NeighbourValue(
        pooled_features(states[:1]).shape[1], max_value, cfg.neighbours, cfg.replies_per_neighbour
    )
    estimator.fit(
        [states[i] for i in rest],
        [prompts[i] for i in rest],
        np.asarray(replies, dtype=object)[rest],
        targets[rest],
        reward,
        seed=cfg.seed,
        progress=progress,
    )
    report = {
        "estimator": "neighbours",
        "n_fit": len(rest),
        "n_heldout": len(held),
        "alpha": float(estimator.ridge.alpha),
        "neighbours": cfg.neighbours,
        "replies_per_neighbour": int(estimator.bank_replies.shape[1]),
    }
    return estimator, add_heldout_r2(report, estimator, states, targets, held, prompts)
