"""A learned reward: a Bradley-Terry preference model r_phi trained on (x, y_w, y_l) pairs.

The paper's HHA rewards are OpenAssistant reward models, Pythia LMs with a scalar head trained on
human preference pairs, used as R(x, y) = sigmoid(logit) (docs/method.md §9.1). This is the same
recipe at CPU scale, trained by the project on the task's own preference pairs:

    s_phi(x, y)   = w^T h_T(x <eos> y)       score head on the last token's hidden state
    L_BT(phi)     = -E log sigmoid(s_phi(x, y_w) - s_phi(x, y_l))
    R(x, y)       = sigmoid(s_phi(x, y)) in (0, 1)

Implementation details:
1. `GPT2ForSequenceClassification` (num_labels=1) built from config, 2 layers x 128 by default,
   with a byte-level BPE trained on the training pairs (`lm.models.train_tokenizer`).
2. Input `prompt <eos> response`, left-truncated to `max_tokens` (the end of the prompt and the
   response matter most) and left-padded, with position ids that count real tokens only, so a
   score does not depend on the batch it is computed in. We pool the last position ourselves: HF's
   pooling looks for the last non-pad token, and here pad = eos is also the separator.
3. Budget: the defaults are 250 steps of 32 pairs, small enough for one CPU thread. On a shared
   machine use torch.set_num_threads(1): oversubscribed OpenMP threads make these small matrix
   products much slower. Held-out pairwise accuracy cannot reach 1 under label noise (RESULTS.md).
4. Chosen and rejected go through one forward pass of 2B rows; AdamW, linear warmup then linear
   decay, gradient clipping at 1.0; epochs of shuffled length-bucketed batches
   (`lm.batching.length_buckets`) drawn with an explicit torch.Generator(seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

from alol_min.cache import dataset_digest, load_or_build, source_digest
from alol_min.lm.batching import length_buckets
from alol_min.lm.models import train_tokenizer


@dataclass
class PreferenceConfig:
    """Shape and training budget of the preference model."""

    n_layer: int = 2
    """Transformer blocks."""
    n_embd: int = 128
    """Hidden width."""
    n_head: int = 4
    """Attention heads."""
    vocab_size: int = 2048
    """Requested BPE size (read len(tokenizer) for the real one)."""
    max_tokens: int = 64
    """`prompt <eos> response` is left-truncated to this many tokens."""
    steps: int = 250
    """Optimiser steps."""
    batch_size: int = 32
    """Pairs per step."""
    lr: float = 2e-3
    """Peak learning rate."""
    warmup_steps: int = 25
    """Linear warmup, then linear decay to 0."""
    seed: int = 0
    """Seed of the initialisation and of the batch order."""


def encode_inputs(tokenizer, prompts, responses, max_tokens: int) -> list[list[int]]:
    """Token ids of `prompt <eos> response`, keeping the last `max_tokens`."""
    eos = tokenizer.eos_token_id
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    return [(p + [eos] + r)[-max_tokens:] for p, r in zip(p_ids, r_ids)]


def left_pad(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids, attention_mask and position_ids (0 at each row's first real token)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            input_ids[b, width - len(r) :] = torch.tensor(r)
            attention_mask[b, width - len(r) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def preference_scores(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """s_phi(x, y) for a left-padded batch: the score head on the last position, shape [B]."""
    hidden = model.transformer(**batch).last_hidden_state[:, -1]
    return model.score(hidden).squeeze(-1)


def bradley_terry_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(s_w - s_l)."""
    return -F.logsigmoid(s_chosen - s_rejected).mean()


def build_preference_model(tokenizer, cfg: PreferenceConfig) -> GPT2ForSequenceClassification:
    torch.manual_seed(cfg.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.max_tokens,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        num_labels=1,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.preference_max_tokens = cfg.max_tokens
    return GPT2ForSequenceClassification(config)


def train_preference_model(
    train_dataset,
    *,
    config: PreferenceConfig | None = None,
    eval_dataset=None,
    progress: bool = False,
    **overrides,
):
    """Train r_phi on a split with `prompt`, `chosen`, `rejected` columns.

    `overrides` set PreferenceConfig fields (seed, steps, batch_size, lr, ...).
    Returns (model, tokenizer, stats); stats has seconds (wall clock) and cpu_seconds (this
    process, all threads: on a shared machine wall time overstates the cost), final_loss and
    train_accuracy (last 50 steps), a loss curve, and eval_accuracy when `eval_dataset` is given.
    """
    cfg = replace(config or PreferenceConfig(), **overrides)
    prompts, chosen, rejected = (list(train_dataset[c]) for c in ("prompt", "chosen", "rejected"))
    start, start_cpu = time.perf_counter(), time.process_time()
    tokenizer = train_tokenizer(
        sorted(set(prompts)) + sorted(set(chosen) | set(rejected)), cfg.vocab_size
    )
    model = build_preference_model(tokenizer, cfg)
    enc_w = encode_inputs(tokenizer, prompts, chosen, cfg.max_tokens)
    enc_l = encode_inputs(tokenizer, prompts, rejected, cfg.max_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / cfg.warmup_steps,
            max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps)),
        ),
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = [max(len(w), len(r)) for w, r in zip(enc_w, enc_l)]
    batches: list[list[int]] = []
    losses, correct, curve = [], [], []
    model.train()
    for step in range(cfg.steps):
        if not batches:  # a new epoch, in length buckets (less padding)
            batches = length_buckets(lengths, cfg.batch_size, generator)
        idx = batches.pop()
        batch = left_pad([enc_w[i] for i in idx] + [enc_l[i] for i in idx], tokenizer.pad_token_id)
        scores = preference_scores(model, batch)
        s_w, s_l = scores[: len(idx)], scores[len(idx) :]
        loss = bradley_terry_loss(s_w, s_l)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        correct.append((s_w > s_l).float().mean().item())
        if progress and (step + 1) % 50 == 0:
            print(
                f"preference step {step + 1}: loss {np.mean(losses[-50:]):.4f}, "
                f"train acc {np.mean(correct[-50:]):.3f}"
            )
        if (step + 1) % 25 == 0:
            curve.append({"step": step + 1, "loss": float(np.mean(losses[-25:]))})
    model.eval()
    stats = {
        "config": asdict(cfg),
        "vocab": len(tokenizer),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - start_cpu,
        "final_loss": float(np.mean(losses[-50:])),
        "train_accuracy": float(np.mean(correct[-50:])),
        "loss_curve": curve,
    }
    if eval_dataset is not None:
        stats["eval_accuracy"] = pairwise_accuracy(
            PreferenceReward(model, tokenizer),
            eval_dataset["prompt"],
            eval_dataset["chosen"],
            eval_dataset["rejected"],
        )
    return model, tokenizer, stats


class PreferenceReward:
    """R(x, y) = sigmoid(s_phi(x, y)), callable like every reward: (prompts, responses) -> dict."""

    components = ("preference",)
    max_total = 1.0
    name = "preference"

    def __init__(self, model, tokenizer, *, max_tokens: int | None = None, batch_size: int = 256):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens or getattr(
            model.config, "preference_max_tokens", model.config.n_positions
        )
        self.batch_size = batch_size

    @torch.no_grad()
    def scores(self, prompts, responses) -> np.ndarray:
        """The raw scores s_phi(x, y) (logits), batched by length."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows = encode_inputs(self.tokenizer, prompts, responses, self.max_tokens)
        out = np.zeros(len(rows), dtype=np.float64)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = left_pad([rows[i] for i in idx], self.tokenizer.pad_token_id)
            out[idx] = preference_scores(self.model, batch).double().numpy()
        return out

    def __call__(self, prompts, responses) -> dict[str, np.ndarray]:
        reward = 1 / (1 + np.exp(-self.scores(prompts, responses)))
        return {"preference": reward, "total": reward.copy()}

    def save(self, folder) -> None:
        """Weights as safetensors, tokenizer and config (with max_tokens) via save_pretrained."""
        self.model.config.preference_max_tokens = self.max_tokens
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def load(cls, folder, **kwargs) -> "PreferenceReward":
        model = GPT2ForSequenceClassification.from_pretrained(Path(folder), use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(Path(folder))
        return cls(model, tokenizer, **kwargs)


def pairwise_accuracy(reward, prompts, chosen, rejected) -> float:
    """Fraction of pairs where the reward ranks chosen above rejected (ties count as wrong)."""
    prompts = list(prompts)
    r_w = reward(prompts, list(chosen))["total"]
    r_l = reward(prompts, list(rejected))["total"]
    return float(np.mean(r_w > r_l))


def bradley_terry_reward(
    task: str, rm_pairs, validation, *, seed: int = 0, steps: int | None = None,
    eval_dataset=None, judge=None, verbose: bool = True,
) -> tuple[PreferenceReward, dict]:  # fmt: skip
    """The reward of a preference task without a given reward model: a Bradley-Terry model trained
    (cached) on `rm_pairs`, as the paper's HHA setup learns its reward from preference pairs.

    Returns (reward, stats); stats has the held-out pairwise accuracy on `validation`, and with a
    `judge` (a task's own scorer) the share of validation pairs the two order differently.
    """
    inputs = {
        "task": task,
        "train": dataset_digest(rm_pairs, ("prompt", "chosen", "rejected")),
        "seed": seed,
        "source": source_digest("alol_min.rewards", "alol_min.tasks.preference"),
    }
    if steps is not None:
        inputs["steps"] = steps
    budget = {} if steps is None else {"steps": steps, "warmup_steps": max(1, min(25, steps // 10))}

    def build(folder: Path) -> None:
        model, tokenizer, stats = train_preference_model(
            rm_pairs, eval_dataset=eval_dataset, seed=seed, **budget
        )
        reward = PreferenceReward(model, tokenizer)
        reward.save(folder)
        val = validation
        stats = {k: v for k, v in stats.items() if not isinstance(v, list)}
        stats["heldout_pairwise_accuracy"] = pairwise_accuracy(
            reward, val["prompt"], val["chosen"], val["rejected"]
        )
        if judge is not None:
            j_c, j_r = (judge(val["prompt"], val[k])["total"] for k in ("chosen", "rejected"))
            r_c, r_r = (reward(val["prompt"], val[k])["total"] for k in ("chosen", "rejected"))
            stats["disagreement_with_judge"] = float(((r_c > r_r) != (j_c > j_r)).mean())
        (folder / "stats.json").write_text(json.dumps(stats, indent=1, default=float))

    folder = load_or_build(f"reward-{task}", inputs, build, verbose=verbose)
    reward = PreferenceReward.load(folder)
    reward.cache_key = folder.name  # what the offline set's cache key names the reward by
    return reward, json.loads((folder / "stats.json").read_text())
