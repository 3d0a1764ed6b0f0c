"""PPO's pieces against small cases worked by hand, and a short run on a reward it must learn."""

import copy

import numpy as np
import pytest
import torch

from alol_min.lm.batching import response_logprobs
from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.ppo import (
    AdaptiveKL,
    PPOConfig,
    check_on_policy,
    gae,
    kl_penalised_rewards,
    last_token,
    masked_whiten,
    policy_loss,
    rollout,
    train_ppo,
    value_loss,
)
from alol_min.run.evaluate import kl_to_reference
from alol_min.run.reproduce import offline_costs

# One response on a grid of 5 targets: position 0 is the prompt, 1-3 the response, 4 padding.
MASK = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
REWARDS = torch.tensor([[0.0, 0.1, -0.2, 1.0, 0.0]])
VALUES = torch.tensor([[9.0, 0.5, 0.4, 0.3, 7.0]])  # 9 and 7 lie outside the mask: never read


def test_gae_by_hand():
    # gamma 1, lambda 0.5: delta_3 = 1.0 - 0.3 = 0.7; delta_2 = -0.2 + 0.3 - 0.4 = -0.3;
    # delta_1 = 0.1 + 0.4 - 0.5 = 0.0; A_3 = 0.7, A_2 = -0.3 + 0.5 * 0.7 = 0.05, A_1 = 0.025.
    advantages, returns = gae(REWARDS, VALUES, MASK, gamma=1.0, lam=0.5)
    assert advantages.tolist()[0] == pytest.approx([0, 0.025, 0.05, 0.7, 0])
    assert returns.tolist()[0] == pytest.approx([0, 0.525, 0.45, 1.0, 0])
    # gamma 0.9, lambda 1: delta_2 = -0.2 + 0.27 - 0.4 = -0.33, A_2 = -0.33 + 0.63 = 0.3;
    # delta_1 = 0.1 + 0.36 - 0.5 = -0.04, A_1 = -0.04 + 0.27 = 0.23.
    advantages, _ = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=1.0)
    assert advantages.tolist()[0] == pytest.approx([0, 0.23, 0.3, 0.7, 0])


def test_gae_monte_carlo_limit_and_rows_independent():
    # gamma = lambda = 1: A_t is the reward still to come minus V(s_t).
    advantages, _ = gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    assert advantages.tolist()[0] == pytest.approx([0, 0.9 - 0.5, 0.8 - 0.4, 1.0 - 0.3, 0])
    # a longer second row (no padding) in the same batch leaves the first row's numbers alone
    mask = torch.cat([MASK, torch.tensor([[0.0, 1, 1, 1, 1]])])
    rewards = torch.cat([REWARDS, torch.tensor([[0.0, 0, 0, 0, 2]])])
    values = torch.cat([VALUES, torch.tensor([[0.0, 1, 1, 1, 1]])])
    both, _ = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert both[0].tolist() == pytest.approx(gae(REWARDS, VALUES, MASK, 1.0, 0.5)[0][0].tolist())
    assert both[1, 4].item() == pytest.approx(1.0)  # 2 - V


def test_padding_values_never_leak():
    changed = VALUES.clone()
    changed[0, 4], changed[0, 0] = -100.0, 100.0
    assert torch.equal(gae(REWARDS, changed, MASK)[0], gae(REWARDS, VALUES, MASK)[0])


def test_kl_penalty_placement():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -9.0]])
    ref = torch.tensor([[-5.0, -1.0, -1.0, -2.0, -1.0]])
    r = kl_penalised_rewards(torch.tensor([2.0]), logp, ref, MASK, beta=0.1)
    # response tokens: -0.1 (logp - ref) = 0.1, -0.05, 0.1; R = 2 on the last response token only;
    # nothing on the prompt token or the padding, whatever their log-probs
    assert r.tolist()[0] == pytest.approx([0, 0.1, -0.05, 0.1 + 2.0, 0])


def test_clipped_surrogate_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.1]])).requires_grad_()
    advantages = torch.tensor([[1.0, -1.0, 2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, clipped = policy_loss(logp, old, advantages, mask, cliprange=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clip binds); token 2: max(0.5, 0.8) = 0.8 (binds);
    # token 3: -2; token 4 is masked
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert clipped.item() == pytest.approx(2 / 3)
    loss.backward()
    # d loss / d logp = -A rho / 3 where the clip does not bind, 0 where it does or is masked
    assert logp.grad.tolist()[0] == pytest.approx([0, 0, -2 / 3, 0])


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old, returns, mask = torch.tensor([[0.5, 0.1]]), torch.tensor([[2.0, 0.0]]), torch.ones(1, 2)
    loss, clipped = value_loss(values, old, returns, mask, cliprange_value=0.2)
    # token 1: V clipped to 0.7, max((1 - 2)^2, (0.7 - 2)^2) = 1.69; token 2: 0
    assert loss.item() == pytest.approx(0.5 * 1.69 / 2)
    assert clipped.item() == pytest.approx(0.5)
    loss.backward()
    assert values.grad.tolist()[0] == pytest.approx([0, 0])  # clipped branch and a zero error


def test_masked_whiten():
    x = torch.tensor([[5.0, 1.0, 2.0, 3.0, -50.0]])
    w = masked_whiten(x, MASK)
    assert w[0, [0, 4]].tolist() == [0, 0]
    assert w[0, 1:4].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # var 1 (unbiased)


def test_adaptive_kl():
    fixed = AdaptiveKL(0.1, None, 100)
    fixed.update(50.0, 10)
    assert fixed.beta == 0.1
    control = AdaptiveKL(0.1, target=2.0, horizon=100)
    control.update(10.0, 10)  # error clipped to 0.2: beta * (1 + 0.2 * 10 / 100)
    assert control.beta == pytest.approx(0.1 * 1.02)
    control.update(1.0, 50)  # error -0.5 clipped to -0.2
    assert control.beta == pytest.approx(0.1 * 1.02 * 0.9)


def test_config_refuses_a_ragged_minibatch(micro_policy):
    model, tokenizer, cfg = micro_policy
    with pytest.raises(ValueError, match="rollout_prompts \\(10\\) must be a multiple"):
        train_ppo(model, tokenizer, ["hi"], None, PPOConfig(rollout_prompts=10), DecodeConfig(),
                  cfg.max_prompt_tokens)  # fmt: skip


def test_check_on_policy_refuses_an_off_policy_start():
    logp = torch.tensor([[-1.0, -2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    check_on_policy(logp, logp + 1e-5, mask, 1)  # rho = 1 up to float noise
    check_on_policy(logp, torch.tensor([[-1.0, -2.0, -9.0]]), mask, 1)  # padding is never read
    with pytest.raises(RuntimeError, match="rollout 3: \\|log rho\\| = 5.00e-02 before the first"):
        check_on_policy(logp, logp - 0.05, mask, 3)


def short_words(prompts, responses):
    """A plain function as the reward: the share of words of at most 3 characters."""
    return {
        "total": np.array([np.mean([len(w) <= 3 for w in r.split()] or [0.0]) for r in responses])
    }


def test_rollout_log_probs_are_those_of_the_update(micro_policy, chitchat_small):
    """rho = 1 before the first update: the rollout's log-probs are the policy's on the sampled ids
    (recomputed on a minibatch, padding kept), and every response ends in <eos> unless cut."""
    model, tokenizer, cfg = micro_policy
    prompts = list(chitchat_small["train"]["prompt"][:8])
    decode = DecodeConfig(max_new_tokens=cfg.max_response_tokens, seed=3)
    batch, logp, ref_logp, mask, scores = rollout(
        model, model, tokenizer, prompts, short_words, decode, cfg.max_prompt_tokens, seed=5
    )
    sub = {k: v[2:6] for k, v in batch.items()}
    again, _ = response_logprobs(model, sub)
    assert torch.allclose(again, logp[2:6], atol=1e-5)
    assert torch.equal(logp, ref_logp)  # the same model as pi_ref: no KL
    assert scores.shape == (8,) and mask.sum(dim=1).max() <= cfg.max_response_tokens
    eos = tokenizer.eos_token_id
    ends = batch["input_ids"][:, 1:][torch.arange(8), last_token(mask)]
    cut = mask.sum(dim=1) == cfg.max_response_tokens
    assert bool(((ends == eos) | cut).all())


def test_ppo_learns_a_simple_reward(micro_policy, chitchat_small):
    """On a reward it can learn quickly, PPO raises the rollout reward, and the kept checkpoint
    beats pi_ref on validation; the log counts samples and reward calls, training's only."""
    model, tokenizer, cfg = micro_policy
    calls = []

    def reward(prompts, responses):
        calls.append(len(responses))
        return short_words(prompts, responses)

    prompts = list(chitchat_small["train"]["prompt"][:200])
    val_prompts = list(chitchat_small["validation"]["prompt"][:32])
    decode = DecodeConfig(max_new_tokens=cfg.max_response_tokens, seed=7)

    def validate(policy):
        texts = generate_responses(policy, tokenizer, val_prompts, decode, cfg.max_prompt_tokens)
        return {"total": float(short_words(val_prompts, texts)["total"].mean())}

    ppo = PPOConfig(steps=10, rollout_prompts=32, minibatch_size=16, epochs=2, lr=1e-2,
                    eval_every=5, seed=0)  # fmt: skip
    policy, log = train_ppo(
        model, tokenizer, prompts, reward, ppo, decode, cfg.max_prompt_tokens,
        validate=validate, progress=False,
    )  # fmt: skip
    rows = log[1:]
    assert [r["samples_generated"] for r in rows] == [32 * k for k in range(1, 11)]
    assert sum(calls) == rows[-1]["reward_calls"] == 32 * 10
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["kl_ref"]) for r in rows)
    late = np.mean([r["rollout_reward"] for r in rows[-3:]])
    assert late > rows[0]["rollout_reward"] + 0.05
    assert log[-1]["kept_step"] in (5, 10)
    kept = next(r for r in rows if r["step"] == log[-1]["kept_step"])
    assert kept["val_total"] > log[0]["val_total"]
    assert all(p.grad is None for p in model.parameters())  # pi_ref is never trained
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), model.parameters()))


def test_offline_costs_count_what_each_method_reads():
    # 600 V-fit samples; 1000 training pairs
    assert offline_costs("nll", 1000, 600) == {"samples_generated": 0, "reward_calls": 0}
    assert offline_costs("dpo", 1000, 600) == {"samples_generated": 0, "reward_calls": 0}
    assert offline_costs("wbc", 1000, 600) == {"samples_generated": 0, "reward_calls": 1000}
    assert offline_costs("pro", 1000, 600) == {"samples_generated": 0, "reward_calls": 2000}
    assert offline_costs("a_lol", 1000, 600) == {"samples_generated": 600, "reward_calls": 1600}


def test_kl_to_reference(micro_policy, chitchat_small):
    """Zero against itself; positive against a perturbed pi_ref; the same for every call (seeded)."""
    model, tokenizer, cfg = micro_policy
    prompts = list(chitchat_small["validation"]["prompt"][:24])
    decode = DecodeConfig(max_new_tokens=cfg.max_response_tokens, batch_size=16, top_p=1.0)
    with pytest.raises(ValueError, match="top_p and temperature must be 1"):
        kl_to_reference(model, model, tokenizer, prompts, DecodeConfig(), cfg.max_prompt_tokens)
    assert kl_to_reference(model, model, tokenizer, prompts, decode, cfg.max_prompt_tokens) == 0.0
    policy = copy.deepcopy(model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    kl = kl_to_reference(policy, model, tokenizer, prompts, decode, cfg.max_prompt_tokens)
    assert kl > 0.1
    assert kl == kl_to_reference(policy, model, tokenizer, prompts, decode, cfg.max_prompt_tokens)
