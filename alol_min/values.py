"""The value estimate V_ref(x): how much reward pi_ref earns on prompt x, on average.

The paper's head sits on frozen pi_ref's last-layer hidden states h_1..h_L of the prompt:

    c    = MultiheadAttention(query = q, keys = values = dropout(h_1..h_L))   (q: one learned vector)
    V(x) = sigmoid(w . dropout(c) + b) * R_max

It is fit by MSE on the rewards of pi_ref's own responses to the validation prompts. Three changes
from the paper's code, each a fix:
  1. padding is masked (`key_padding_mask`): the paper attends to pad tokens, so V(x) depends on how
     much padding the batch happens to have;
  2. V is predicted in eval mode: the paper leaves dropout on, so its advantages are random;
  3. the target can be the mean reward of k samples per prompt (k = 1 is the paper's single sample),
     which lowers the noise in the regression target.

How good can any V be? Each sample's reward is R_ij = mu(x_i) + noise. With k samples per prompt,
the best possible R^2 against the k-sample mean is the noise ceiling

    ceiling = s_b^2 / (s_b^2 + s_w^2 / k),   s_b^2 = Var_i(mean_j R_ij) - s_w^2 / k,   s_w^2 = mean_i Var_j(R_ij)

(s_b^2: between-prompt variance, s_w^2: within-prompt sampling variance). `noise_ceiling` estimates it.
R^2 / ceiling = 1 - E[(V(x) - mu(x))^2] / s_b^2: the share of the between-prompt variance V captures.

Three estimators (`ValueConfig.estimator`), all reading frozen pi_ref's states of the prompt:
  "ridge" (default)  V(x) = clip(w . phi(x) + b, 0, R_max), phi(x) = [mean_t h^(l)_t for every layer l,
                     h^(L)_last], w by ridge regression with the penalty chosen by 5-fold CV. Closed
                     form, deterministic, no padding in sight. It reaches more of the ceiling than the
                     attention head on both embedded tasks (RESULTS.md, bench/value_fit.py).
  "attention"        the paper's head above (with the three fixes).
  "neighbours"       the ridge on phi(x) plus T(x), the reward of x paired with pi_ref's replies to the
                     fit prompts nearest to x (`NeighbourValue`; not in the paper). It needs the reward
                     and the prompts' texts, and costs m r reward calls per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


class ValueHead(nn.Module):
    """V(x) = sigmoid(Linear(dropout(Attention(q, h, h)))) * max_value over frozen prompt states h."""

    def __init__(
        self,
        hidden_size: int,
        max_value: float,
        n_heads: int = 8,
        dropout: float = 0.1,
        mask_padding: bool = True,
    ):
        super().__init__()
        if hidden_size % n_heads:
            n_heads = next(h for h in (8, 4, 2, 1) if hidden_size % h == 0)
        self.max_value = float(max_value)
        self.mask_padding = mask_padding  # False reproduces the paper's code (attends to padding)
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size))  # N(0, 1), shared by all prompts
        self.attention = nn.MultiheadAttention(hidden_size, n_heads, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, 1)

    def predict(self, states: list[torch.Tensor], prompts=None) -> np.ndarray:
        """V(x) from `prompt_states` output (the head reads the last layer), in eval mode; `prompts` unused."""
        return predict_values(self, [s[-1] for s in states])

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [B, L, d] (last-layer prompt hidden states), mask [B, L] (1 on real tokens) -> V [B]."""
        states = self.dropout(states.float())
        query = self.query.expand(states.shape[0], -1, -1)
        padding = (mask == 0) if self.mask_padding else None
        context, _ = self.attention(
            query, states, states, key_padding_mask=padding, need_weights=False
        )
        return torch.sigmoid(self.out(self.dropout(context[:, 0])).squeeze(-1)) * self.max_value


@torch.no_grad()
def prompt_states(
    model, prompt_ids: list[list[int]], pad_id: int, batch_size: int = 64, progress: bool = False
):
    """Hidden states of every layer for each prompt (a list of [n_layers + 1, L_i, d]) from frozen pi_ref."""

    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor] = [None] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="prompt states", disable=not progress):
        idx = order[start : start + batch_size]
        ids, mask = pad_right([prompt_ids[i] for i in idx], pad_id)
        hidden = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
        ).hidden_states
        for b, i in enumerate(idx):
            out[i] = layer_states(hidden, b, len(prompt_ids[i]))
    return out


def layer_states(hidden_states, b: int, length: int) -> torch.Tensor:
    """Row b's first `length` positions of every layer's states: [n_layers + 1, length, d] on the CPU."""
    return torch.stack([h[b, :length] for h in hidden_states]).float().cpu()


def pooled_features(states: list[torch.Tensor]) -> np.ndarray:
    """phi(x) = [mean_t h^(l)_t for each layer l, h^(L) at the last prompt position]: [N, (n_layers + 2) d]."""
    return (
        torch.stack([torch.cat([s.mean(dim=1).flatten(), s[-1, -1]]) for s in states])
        .double()
        .numpy()
    )


def pad_right(rows: list, pad_value) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists or [L_i, d] tensors into a right-padded batch and its 0/1 mask."""
    lengths = [len(r) for r in rows]
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    if isinstance(rows[0], torch.Tensor) and rows[0].dim() == 2:
        batch = torch.zeros(len(rows), max(lengths), rows[0].shape[1])
        for b, r in enumerate(rows):
            batch[b, : len(r)] = r
        return batch, mask
    batch = torch.full((len(rows), max(lengths)), pad_value, dtype=torch.long)
    for b, r in enumerate(rows):
        batch[b, : len(r)] = torch.as_tensor(r)
    return batch, mask


@torch.no_grad()
def predict_values(
    head: ValueHead, states: list[torch.Tensor], batch_size: int = 256
) -> np.ndarray:
    """V(x) for each prompt's states, in eval mode (deterministic: no dropout)."""
    head.eval()
    values = []
    for start in range(0, len(states), batch_size):
        batch, mask = pad_right(states[start : start + batch_size], 0.0)
        values.append(head(batch, mask))
    return torch.cat(values).numpy().astype(np.float64)


class RidgeValue(nn.Module):
    """V(x) = clip(w . z(x) + b, 0, R_max), z = (phi(x) - mean) / scale, w = argmin |y - b - Z w|^2 + alpha |w|^2.

    Solved in closed form by `_ridge`, b = mean(y): the primal (Z^T Z + alpha I)^-1 Z^T (y - b) when
    there are more prompts than features, else the dual Z^T (Z Z^T + alpha I)^-1 (y - b).
    """

    def __init__(self, n_features: int, max_value: float):
        super().__init__()
        self.max_value = float(max_value)
        for name in ("mean", "scale", "weight"):
            self.register_buffer(name, torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros((), dtype=torch.float64))
        self.register_buffer("alpha", torch.zeros((), dtype=torch.float64))

    def fit(
        self,
        features: np.ndarray,
        targets: np.ndarray,
        alphas=tuple(10.0 ** np.arange(-1, 5.5, 0.5)),
        folds: int = 5,
        seed: int = 0,
    ) -> "RidgeValue":
        """Standardise phi, choose alpha by `folds`-fold CV on these prompts, refit on all of them."""
        mean, scale = features.mean(0), features.std(0) + 1e-6
        z = (features - mean) / scale
        order = np.random.default_rng(seed).permutation(len(z))
        errors = np.zeros(len(alphas))
        for fold in range(folds):
            held = order[fold::folds]
            keep = np.setdiff1d(order, held)
            for a, alpha in enumerate(alphas):
                w, b = _ridge(z[keep], targets[keep], alpha)
                errors[a] += ((z[held] @ w + b - targets[held]) ** 2).sum()
        alpha = float(alphas[int(errors.argmin())])
        w, b = _ridge(z, targets, alpha)
        for name, value in (
            ("mean", mean),
            ("scale", scale),
            ("weight", w),
            ("bias", b),
            ("alpha", alpha),
        ):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float64))
        return self

    def predict(self, states: list[torch.Tensor], prompts=None) -> np.ndarray:
        """V(x) for `prompt_states` output; `prompts` unused."""
        return self.predict_features(pooled_features(states))

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean.numpy()) / self.scale.numpy()
        return np.clip(z @ self.weight.numpy() + float(self.bias), 0.0, self.max_value)


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge on centred targets: primal (Z^T Z + aI)^-1 Z^T y or dual Z^T (Z Z^T + aI)^-1 y, whichever is smaller."""
    b = float(y.mean())
    n, d = z.shape
    if d <= n:
        return np.linalg.solve(z.T @ z + alpha * np.eye(d), z.T @ (y - b)), b
    return z.T @ np.linalg.solve(z @ z.T + alpha * np.eye(n), y - b), b


ESTIMATORS = ("ridge", "attention", "neighbours")


@dataclass
class ValueConfig:
    """How V_ref is fit."""

    estimator: Literal["ridge", "attention", "neighbours"] = "ridge"
    """"ridge" (closed-form ridge on pooled frozen states), "attention" (the paper's head) or "neighbours"
    (the ridge plus the reward of x with pi_ref's replies to the nearest fit prompts)."""
    samples_per_prompt: int = 4
    """k: pi_ref samples per validation prompt; the target is their mean reward (k=1: the paper)."""
    neighbours: int = 32
    """"neighbours" only: m, the fit prompts whose pi_ref replies are paired with x."""
    replies_per_neighbour: int = 4
    """"neighbours" only: r, the replies of each neighbour used (at most k)."""
    epochs: int = 40
    """Attention head only: passes over the fitting prompts (the best epoch on an inner validation slice is kept)."""
    lr: float = 1e-3
    """AdamW learning rate (the paper: 1e-5 for a 7B model's head)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    batch_size: int = 32
    """Prompts per step."""
    dropout: float = 0.1
    """Dropout of the head while fitting (as the paper)."""
    holdout_fraction: float = 0.2
    """Share of prompts held out to report R^2 (never used for fitting or model selection)."""
    seed: int = 0
    """Seed of the head's init, the holdout split and the batch order."""

    def unused_fields(self) -> tuple[str, ...]:
        """Options the chosen estimator ignores, left out of cache keys (`cache.config_inputs`): the
        neighbours options unless that estimator is used, so older ridge / attention keys stay valid."""
        return () if self.estimator == "neighbours" else ("neighbours", "replies_per_neighbour")


def r2_score(prediction, target) -> float:
    """1 - SSE / SST."""
    prediction, target = np.asarray(prediction, float), np.asarray(target, float)
    return float(1 - ((target - prediction) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def noise_ceiling(samples: np.ndarray) -> dict:
    """Between/within-prompt variance of k rewards per prompt ([N, k]) and the R^2 ceiling of any V.

    s_w^2 = mean_i Var_j R_ij; s_b^2 = Var_i(mean_j R_ij) - s_w^2 / k (noise-corrected);
    between_share = s_b^2 / (s_b^2 + s_w^2); ceiling = s_b^2 / (s_b^2 + s_w^2 / k).
    """
    samples = np.asarray(samples, float)
    k = samples.shape[1]
    if k < 2:
        raise ValueError("the noise ceiling needs at least 2 samples per prompt")
    within = samples.var(axis=1, ddof=1).mean()
    between = max(samples.mean(axis=1).var(ddof=1) - within / k, 0.0)
    return {
        "k": k,
        "between_var": float(between),
        "within_var": float(within),
        "between_share": float(between / (between + within)) if between + within > 0 else 0.0,
        "ceiling_r2": float(between / (between + within / k)) if between + within > 0 else 0.0,
    }


def check_targets(targets) -> np.ndarray:
    """The value targets as floats; a NaN is an error naming its prompt."""
    targets = np.asarray(targets, float)
    if np.isnan(targets).any():
        raise ValueError(f"value targets contain NaN (at prompt {int(np.isnan(targets).argmax())})")
    return targets


def heldout_split(n: int, cfg: ValueConfig, heldout: list[int] | None = None):
    """(held-out, fit) prompt indices: `heldout` if given (cross-validation), else a seeded
    `holdout_fraction` of the n prompts. Held-out prompts are never used for fitting or selection."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    if heldout is not None:
        held_set = set(heldout)
        order = list(heldout) + [i for i in order if i not in held_set]
    n_hold = len(heldout) if heldout is not None else int(round(cfg.holdout_fraction * n))
    return order[:n_hold], order[n_hold:]


def add_heldout_r2(report: dict, estimator, states, targets, held: list[int], prompts=None) -> dict:
    """report["heldout_r2"]: R^2 of the estimator's V on the held-out prompts."""
    if held:
        held_prompts = [prompts[i] for i in held] if prompts is not None else None
        prediction = estimator.predict([states[i] for i in held], held_prompts)
        report["heldout_r2"] = r2_score(prediction, targets[held])
        report["heldout_indices"] = held
    return report


def fit_value(
    states: list[torch.Tensor],
    targets,
    max_value: float,
    cfg: ValueConfig,
    progress: bool = False,
    heldout: list[int] | None = None,
) -> tuple[nn.Module, dict]:
    """Fit V on (`prompt_states`, mean reward) by MSE; report held-out R^2.

    The prompts are split by `heldout_split`; R^2 is measured on the held-out prompts alone.
    Returns (estimator, report); the estimator has `.predict(states, prompts=None) -> V`.
    The "neighbours" estimator is not the paper's: `extensions.neighbour_value.fit_neighbour_value`.
    """
    targets = check_targets(targets)
    if cfg.estimator not in ("ridge", "attention"):
        hint = (
            " (not in the paper: fit it with alol_min.extensions.neighbour_value.fit_neighbour_value)"
            if cfg.estimator == "neighbours"
            else ""
        )
        raise ValueError(
            f"fit_value fits ValueConfig.estimator 'ridge' or 'attention', got {cfg.estimator!r}{hint}"
        )
    held, rest = heldout_split(len(states), cfg, heldout)
    if cfg.estimator == "ridge":
        features = pooled_features(states)
        estimator = RidgeValue(features.shape[1], max_value).fit(
            features[rest], targets[rest], seed=cfg.seed
        )
        report = {
            "estimator": "ridge",
            "n_fit": len(rest),
            "n_heldout": len(held),
            "alpha": float(estimator.alpha),
        }
    else:
        estimator, report = _fit_attention([s[-1] for s in states], targets, max_value, cfg, rest)
    return estimator, add_heldout_r2(report, estimator, states, targets, held)


def _fit_attention(
    states: list[torch.Tensor],
    targets: np.ndarray,
    max_value: float,
    cfg: ValueConfig,
    rest: list[int],
) -> tuple[ValueHead, dict]:
    """The paper's head, trained on `rest` minus a 1/8 selection slice; the best epoch on that slice is kept."""
    targets = torch.as_tensor(targets, dtype=torch.float32)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    n_select = max(1, len(rest) // 8)
    select, fit = rest[:n_select], rest[n_select:]
    head = ValueHead(states[0].shape[-1], max_value, dropout=cfg.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def mse(indices):
        return float(
            (
                (predict_values(head, [states[i] for i in indices]) - targets[indices].numpy()) ** 2
            ).mean()
        )

    best, best_state, history = float("inf"), None, []
    for epoch in range(cfg.epochs):
        head.train()
        perm = [fit[i] for i in torch.randperm(len(fit), generator=generator).tolist()]
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            batch, mask = pad_right([states[i] for i in idx], 0.0)
            loss = ((head(batch, mask) - targets[idx]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        select_mse = mse(select)
        history.append({"epoch": epoch + 1, "fit_mse": mse(fit), "select_mse": select_mse})
        if select_mse < best:
            best, best_state = select_mse, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.eval()
    return head, {
        "estimator": "attention",
        "n_fit": len(fit),
        "n_select": len(select),
        "best_epoch": min(history, key=lambda h: h["select_mse"])["epoch"],
        "history": history,
    }
