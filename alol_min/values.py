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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class ValueHead(nn.Module):
    """V(x) = sigmoid(Linear(dropout(Attention(q, h, h)))) * max_value over frozen prompt states h."""

    def __init__(self, hidden_size: int, max_value: float, n_heads: int = 8, dropout: float = 0.1,
                 mask_padding: bool = True):
        super().__init__()
        if hidden_size % n_heads:
            n_heads = next(h for h in (8, 4, 2, 1) if hidden_size % h == 0)
        self.max_value = float(max_value)
        self.mask_padding = mask_padding  # False reproduces the paper's code (attends to padding)
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size))  # N(0, 1), shared by all prompts
        self.attention = nn.MultiheadAttention(hidden_size, n_heads, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [B, L, d] (prompt hidden states), mask [B, L] (1 on real tokens) -> V [B]."""
        states = self.dropout(states.float())
        query = self.query.expand(states.shape[0], -1, -1)
        padding = (mask == 0) if self.mask_padding else None
        context, _ = self.attention(query, states, states, key_padding_mask=padding, need_weights=False)
        return torch.sigmoid(self.out(self.dropout(context[:, 0])).squeeze(-1)) * self.max_value


@torch.no_grad()
def prompt_states(model, prompt_ids: list[list[int]], pad_id: int, batch_size: int = 64, progress: bool = False):
    """Last-layer hidden states of each prompt (a list of [L_i, d] tensors) from frozen pi_ref."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor] = [None] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="prompt states", disable=not progress):
        idx = order[start:start + batch_size]
        ids, mask = pad_right([prompt_ids[i] for i in idx], pad_id)
        hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states[-1]
        for b, i in enumerate(idx):
            out[i] = hidden[b, :len(prompt_ids[i])].float().cpu()
    return out


def pad_right(rows: list, pad_value) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists or [L_i, d] tensors into a right-padded batch and its 0/1 mask."""
    lengths = [len(r) for r in rows]
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    if isinstance(rows[0], torch.Tensor) and rows[0].dim() == 2:
        batch = torch.zeros(len(rows), max(lengths), rows[0].shape[1])
        for b, r in enumerate(rows):
            batch[b, :len(r)] = r
        return batch, mask
    batch = torch.full((len(rows), max(lengths)), pad_value, dtype=torch.long)
    for b, r in enumerate(rows):
        batch[b, :len(r)] = torch.as_tensor(r)
    return batch, mask


@torch.no_grad()
def predict_values(head: ValueHead, states: list[torch.Tensor], batch_size: int = 256) -> np.ndarray:
    """V(x) for each prompt's states, in eval mode (deterministic: no dropout)."""
    head.eval()
    values = []
    for start in range(0, len(states), batch_size):
        batch, mask = pad_right(states[start:start + batch_size], 0.0)
        values.append(head(batch, mask))
    return torch.cat(values).numpy().astype(np.float64)


@dataclass
class ValueConfig:
    """How V_ref is fit."""

    samples_per_prompt: int = 4
    """k: pi_ref samples per validation prompt; the target is their mean reward (k=1: the paper)."""
    epochs: int = 40
    """Passes over the fitting prompts (the best epoch on an inner validation slice is kept)."""
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
    return {"k": k, "between_var": float(between), "within_var": float(within),
            "between_share": float(between / (between + within)) if between + within > 0 else 0.0,
            "ceiling_r2": float(between / (between + within / k)) if between + within > 0 else 0.0}


def fit_value_head(states: list[torch.Tensor], targets, max_value: float, cfg: ValueConfig,
                   progress: bool = False, heldout: list[int] | None = None) -> tuple[ValueHead, dict]:
    """Fit V on (prompt states, mean reward) by MSE; report held-out R^2.

    The prompts are split into fit / select / held-out: the head trains on `fit`, the epoch with the
    lowest MSE on `select` is kept, and R^2 is measured on `held-out` alone. `heldout` fixes the
    held-out indices (for cross-validation); by default a seeded `holdout_fraction` is drawn.
    """
    targets = torch.as_tensor(np.asarray(targets, float), dtype=torch.float32)
    if torch.isnan(targets).any():
        raise ValueError("value targets contain NaN")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    order = torch.randperm(len(states), generator=generator).tolist()
    if heldout is not None:
        held_set = set(heldout)
        order = list(heldout) + [i for i in order if i not in held_set]
    n_hold = len(heldout) if heldout is not None else int(round(cfg.holdout_fraction * len(states)))
    n_select = max(1, int(round(0.1 * len(states))))
    held, select, fit = order[:n_hold], order[n_hold:n_hold + n_select], order[n_hold + n_select:]
    head = ValueHead(states[0].shape[-1], max_value, dropout=cfg.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def mse(indices):
        return float(((predict_values(head, [states[i] for i in indices]) - targets[indices].numpy()) ** 2).mean())

    best, best_state, history = float("inf"), None, []
    for epoch in range(cfg.epochs):
        head.train()
        perm = [fit[i] for i in torch.randperm(len(fit), generator=generator).tolist()]
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
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
    report = {"n_fit": len(fit), "n_select": len(select), "n_heldout": len(held),
              "best_epoch": min(history, key=lambda h: h["select_mse"])["epoch"], "history": history}
    if held:
        prediction = predict_values(head, [states[i] for i in held])
        report["heldout_r2"] = r2_score(prediction, targets[held].numpy())
        report["heldout_indices"] = held
    return head, report
