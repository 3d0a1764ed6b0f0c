"""PPO for language models: RLHF's online policy optimisation, the paper's contrast to A-LoL.

A-LoL and PPO start from the same policy gradient (notebook 00):

    grad J(theta) = E_{x, y ~ pi_theta} [ A(x, y) grad log pi_theta(y|x) ].

A-LoL (the paper's Eq. 3-4, docs/method.md) moves the expectation onto responses that already
exist, with an importance weight and a value V_ref fixed at pi_ref, so its data costs nothing per
step. PPO keeps the expectation on-policy: every step samples new responses and scores them.

One step (`train_ppo`):
1. rollout: B training prompts, one sampled response each, decoded as the offline methods' top-p
   test view decodes;
2. score: R(x, y) from the reward, any callable `reward(prompts, responses) -> {"total": ...}`;
3. per-token rewards r_t = -beta (log pi_theta(y_t) - log pi_ref(y_t)), plus R at the last token;
4. values V(s_t) from the critic; GAE advantages, whitened; returns G_t = A_t + V(s_t);
5. `epochs` passes over shuffled minibatches of the clipped surrogate plus the clipped value loss.

Implementation details, each with its source:
- The sequence reward is given at the response's final token (its <eos>, or the last token when
  the length limit cut the response); every other token's reward is the KL penalty alone
  (Ziegler et al. 2019; Stiennon et al. 2020).
- The KL penalty is per token, k1 = log pi_theta(y_t) - log pi_ref(y_t) on the sampled token, with
  a fixed beta, or, with `kl_target`, the adaptive controller beta <- beta (1 + clip(KL / target
  - 1, -0.2, 0.2) B / horizon) (Ziegler et al. 2019; the form of TRL's former PPOTrainer).
- The critic is a separate network initialised from pi_ref (its transformer and a new scalar head),
  not a head on the policy: value-loss gradients never move the policy. Huang et al. 2024
  initialise it from the reward model; here rewards are functions, not LMs, so pi_ref is the
  nearest model. The head's bias starts at the first rollout's mean reward, so that value
  clipping does not spend the first rollouts climbing from 0 to the reward's scale.
- GAE with gamma = 1, lambda = 0.95 (Schulman et al. 2016; TRL's defaults, as Huang et al. 2024).
- Advantages are whitened over the batch's response tokens (masked mean and variance; TRL's
  masked_whiten; Huang et al. 2024).
- Policy loss: the clipped surrogate max(-A rho, -A clip(rho, 1 - eps, 1 + eps)), with
  rho = pi_theta(y_t) / pi_old(y_t) per token and eps = 0.2 (Schulman et al. 2017; TRL).
- Value loss: 0.5 max((V - G)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - G)^2), eps_v = 0.2
  (TRL's cliprange_value; cleanrl's clipped value loss).
- 4 epochs of minibatch updates per rollout (TRL's ppo_epochs).
- Means and whitening run over response tokens only: prompt tokens and the padding after <eos>
  are masked (TRL; Huang et al. 2024).
- Log-probs are recomputed by a forward pass on the sampled token ids, never re-tokenised from
  the decoded text (Huang et al. 2024).
- Rollouts sample as the offline methods' top-p test view samples (p 0.9), so that every method
  is sampled alike; the paper's PPO also sampled with top-p. rho and the KL penalty use pi_theta's
  full softmax, so the per-token penalty is k1 under the truncated sampler, whose mean can fall
  below the KL (TRL's documentation advises untruncated sampling for this reason;
  `--eval-decode.top-p 1` gives it). The temperature must be 1: the log-probs are untempered.
- Dropout is off in every forward, rollouts and updates alike, so rho = 1 before the first update
  (Ziegler et al. 2019; Huang et al. 2024).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from alol_min.lm.batching import encode_prompts, response_logprobs
from alol_min.lm.generation import DecodeConfig
from alol_min.lm.loop import JsonlLog
from alol_min.run.evaluate import sampled_log_probs


@dataclass
class PPOConfig:
    """Online optimisation of pi_theta (initialised from pi_ref) by PPO."""

    steps: int = 100
    """Rollouts (policy iterations); each samples and scores `rollout_prompts` new responses."""
    rollout_prompts: int = 64
    """B: training prompts per rollout, one sampled response each."""
    minibatch_size: int = 16
    """Responses per gradient step; B / minibatch_size steps per epoch."""
    epochs: int = 4
    """Passes over each rollout (TRL's ppo_epochs)."""
    lr: float = 1e-4
    """AdamW learning rate of the policy and the critic."""
    kl_beta: float = 0.05
    """beta: weight of the per-token KL penalty to pi_ref (the initial value under kl_target)."""
    kl_target: float | None = None
    """Target KL(pi_theta || pi_ref) per response for the adaptive controller; None: fixed beta."""
    kl_horizon: int = 10000
    """Horizon of the adaptive controller, in responses."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """lambda of GAE."""
    cliprange: float = 0.2
    """eps of the clipped surrogate."""
    cliprange_value: float = 0.2
    """eps_v of the clipped value loss."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    grad_clip: float = 1.0
    """Max gradient norm (policy and critic together)."""
    eval_every: int = 10
    """Validation every this many rollouts and at the end."""
    no_improvement: Literal["keep_ref", "keep_last"] = "keep_ref"
    """As the offline methods: keep pi_ref (or the last step) when no validation beats pi_ref's."""
    seed: int = 0
    """Seed of the prompt sampler and of the rollouts' sampling."""


# ----------------------------------------------------------------------------------------------
# The pieces, each on a [B, T] grid of response targets (mask 1 on response tokens)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum()


def masked_whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries (unbiased var); zero outside the mask."""
    mean = masked_mean(x, mask)
    var = ((x - mean) ** 2 * mask).sum() / (mask.sum() - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def last_token(mask: Tensor) -> Tensor:
    """Index of each row's final response target (the last 1 of the mask)."""
    return mask.cumsum(dim=1).argmax(dim=1)


def kl_penalised_rewards(
    reward: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """r_t = -beta (log pi_theta(y_t) - log pi_ref(y_t)) on response tokens, + R(x, y) at the last."""
    r = -beta * (logp - ref_logp) * mask
    r[torch.arange(len(r)), last_token(mask)] += reward
    return r


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation along each response:

        delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   V = 0 after the final token,
        A_t = delta_t + gamma lam A_{t+1},           G_t = A_t + V(s_t).

    Returns (A, G), zero outside the mask."""
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * m
        next_value, next_advantage = values[:, t] * m, advantages[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, cliprange: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate, mean over response tokens: max(-A rho, -A clip(rho, 1-eps, 1+eps)),
    rho = exp(log pi_theta - log pi_old). Returns (loss, share of tokens where the clip binds)."""
    rho = torch.exp(logp - old_logp)
    unclipped = -advantages * rho
    clipped = -advantages * rho.clamp(1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float = 0.2
) -> tuple[Tensor, Tensor]:
    """0.5 max((V - G)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - G)^2), mean over response
    tokens. Returns (loss, share of tokens where the clip binds)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


RHO_TOLERANCE = 1e-3
"""|log rho| allowed before the first update of a rollout, where pi_theta is the sampling policy."""


def check_on_policy(logp: Tensor, old_logp: Tensor, mask: Tensor, rollout_number: int) -> None:
    """Before a rollout's first update rho = pi_theta / pi_old must be 1 on every response token:
    otherwise the update's forward differs from the sampler's (dropout on, other padding), and
    the clipped surrogate would start off-policy without saying so."""
    gap = float(torch.where(mask.bool(), (logp - old_logp).abs(), 0.0).max()) if mask.any() else 0.0
    if gap > RHO_TOLERANCE:
        raise RuntimeError(
            f"ppo: rollout {rollout_number}: |log rho| = {gap:.2e} before the first update "
            f"(expected <= {RHO_TOLERANCE}): the update's forward pass differs from the sampler's"
        )


class AdaptiveKL:
    """Ziegler et al.'s controller: beta <- beta (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon),
    n the responses of the rollout; target None keeps beta fixed."""

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1, -0.2, 0.2))
            self.beta *= 1 + error * n / self.horizon


class Critic(nn.Module):
    """V(s_t): pi_ref's transformer (a copy) and a scalar head, on the same grid as the log-probs:
    values[:, t] is the value of the state after token t, the one that chooses token t + 1."""

    def __init__(self, ref_model):
        super().__init__()
        self.body = copy.deepcopy(ref_model.base_model)
        self.head = nn.Linear(ref_model.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.body(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        return self.head(hidden[:, :-1]).squeeze(-1) * batch["response_mask"]


# ----------------------------------------------------------------------------------------------
# Rollouts


@torch.no_grad()
def rollout(policy, ref_model, tokenizer, prompts, reward, decode, max_prompt, seed):
    """Sample, score and evaluate one batch: the tensors of the update, and R."""
    eos = tokenizer.eos_token_id
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt)
    batch, responses, logp, ref_logp, mask = sampled_log_probs(
        policy, ref_model, tokenizer, prompt_ids, decode, seed
    )
    texts = [tokenizer.decode([t for t in r if t != eos], skip_special_tokens=True).strip()
             for r in responses]  # fmt: skip
    device = logp.device
    scores = reward(list(prompts), texts)["total"]
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(f"the reward returned a non-finite total: {scores}")
    return batch, logp, ref_logp, mask, torch.as_tensor(scores, dtype=torch.float32).to(device)


# ----------------------------------------------------------------------------------------------
# The loop


def train_ppo(
    ref_model, tokenizer, prompts, reward, cfg: PPOConfig, decode: DecodeConfig,
    max_prompt_tokens: int, validate=None, run_dir: Path | None = None, progress: bool = True,
    initial_scores: dict | None = None,
):  # fmt: skip
    """Train pi_theta (a copy of pi_ref) by PPO on `prompts`; returns (best model, log rows), with
    the contract of `run.train.train_offline`: validation every `eval_every` rollouts and at the
    end, the best checkpoint by validation total kept (pi_ref's score the first bar), and the last
    row's "kept_step". Each row logs the cost: samples generated and reward calls so far (the
    training rollouts'; validation is not counted, as for the offline methods), seconds, KL to
    pi_ref and the mean response length of the rollout."""
    if decode.temperature != 1.0:
        raise ValueError(f"PPO's log-probs are untempered: sample at temperature 1, got "
                         f"{decode.temperature}")  # fmt: skip
    if cfg.rollout_prompts % cfg.minibatch_size:
        raise ValueError(f"rollout_prompts ({cfg.rollout_prompts}) must be a multiple of "
                         f"minibatch_size ({cfg.minibatch_size})")  # fmt: skip
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    ref_model.eval()
    policy, critic = copy.deepcopy(ref_model).eval(), Critic(ref_model).eval()
    critic.to(next(policy.parameters()).device)
    params = list(policy.parameters()) + list(critic.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, weight_decay=0.0)
    kl_control = AdaptiveKL(cfg.kl_beta, cfg.kl_target, cfg.kl_horizon)
    log, best_score, best_state, kept_step = [], -float("inf"), None, None
    if validate is not None:
        scores = initial_scores if initial_scores is not None else validate(policy)
        best_score = scores["total"]
        if cfg.no_improvement == "keep_ref":
            best_state, kept_step = copy.deepcopy(policy.state_dict()), 0
        log.append({"step": 0, "examples_seen": 0, "samples_generated": 0, "reward_calls": 0,
                    **{f"val_{k}": v for k, v in scores.items()}})  # fmt: skip
    log_file = JsonlLog(None)
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"method": "ppo", "steps_run": cfg.steps, **asdict(cfg), "decode": asdict(decode)}
        (run_dir / "config.json").write_text(json.dumps(config, indent=1))
        log_file = JsonlLog(run_dir / "log.jsonl")
        for row in log:
            log_file.write(row)
    start, generated = time.time(), 0
    for step in tqdm(range(cfg.steps), desc="PPO", disable=not progress, mininterval=1.0):
        picked = torch.randint(len(prompts), (cfg.rollout_prompts,), generator=generator)
        batch, old_logp, ref_logp, mask, scores = rollout(
            policy, ref_model, tokenizer, [prompts[i] for i in picked.tolist()], reward,
            decode, max_prompt_tokens, seed=cfg.seed * 1_000_003 + step,
        )  # fmt: skip
        generated += len(scores)
        if step == 0:  # the critic starts at the reward's scale (see the docstring)
            critic.head.bias.data.fill_(float(scores.mean()))
        with torch.no_grad():
            old_values = critic(batch)
            kl_ref = ((old_logp - ref_logp) * mask).sum(dim=1)  # k1 estimate of KL per response
            rewards = kl_penalised_rewards(scores, old_logp, ref_logp, mask, kl_control.beta)
            advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = masked_whiten(advantages, mask)
        stats = []
        for epoch in range(cfg.epochs):
            order = torch.randperm(cfg.rollout_prompts, generator=generator)
            for i, mb in enumerate(order.split(cfg.minibatch_size)):
                sub = {k: v[mb] for k, v in batch.items()}
                logp, _ = response_logprobs(policy, sub)
                if epoch == 0 and i == 0:
                    check_on_policy(logp.detach(), old_logp[mb], mask[mb], step + 1)
                pg, pg_clip = policy_loss(logp, old_logp[mb], advantages[mb], mask[mb],
                                          cfg.cliprange)  # fmt: skip
                vf, vf_clip = value_loss(critic(sub), old_values[mb], returns[mb], mask[mb],
                                         cfg.cliprange_value)  # fmt: skip
                loss = pg + cfg.vf_coef * vf
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"ppo: loss is {loss.item()} at rollout {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                approx_kl = masked_mean(old_logp[mb] - logp.detach(), mask[mb])
                stats.append(
                    [pg.item(), vf.item(), pg_clip.item(), vf_clip.item(), approx_kl.item()]
                )
        kl_control.update(float(kl_ref.mean()), len(scores))
        pg, vf, pg_clip, vf_clip, approx_kl = np.mean(stats, axis=0)
        row = {
            "step": step + 1, "loss": round(pg + cfg.vf_coef * vf, 5),
            "policy_loss": round(pg, 5), "value_loss": round(vf, 5),
            "clip_fraction": round(pg_clip, 4), "value_clip_fraction": round(vf_clip, 4),
            "approx_kl": round(approx_kl, 5), "rollout_reward": round(float(scores.mean()), 4),
            "kl_ref": round(float(kl_ref.mean()), 4),
            "response_tokens": round(float(mask.sum(dim=1).mean()), 2),
            "beta": round(kl_control.beta, 5), "examples_seen": generated,
            "samples_generated": generated, "reward_calls": generated,
            "seconds": round(time.time() - start, 2),
        }  # fmt: skip
        if validate is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            val = validate(policy)
            row.update({f"val_{k}": v for k, v in val.items()})
            last = step + 1 == cfg.steps and best_state is None  # keep_last: nothing beat pi_ref
            if val["total"] > best_score or last:
                best_score = max(best_score, val["total"])
                best_state, kept_step = copy.deepcopy(policy.state_dict()), step + 1
                row["best"] = True
        log.append(row)
        log_file.write(row)
    if best_state is not None:
        policy.load_state_dict(best_state)
    if log:
        log[-1]["kept_step"] = cfg.steps if kept_step is None else kept_step
    return policy.eval(), log
