import json

import numpy as np
import pytest
import torch

from alol_min.lm.batching import collate, encode_pairs, encode_prompts, token_logprobs
from alol_min.lm.generation import DecodeConfig
from alol_min.losses import METHODS, reward_logit
from alol_min.run.prepare import advantage_summary, fit_value_estimate, reference_pass
from alol_min.run.train import (
    OfflineConfig,
    OfflineData,
    probe_indices,
    probe_log_ratios,
    probe_row,
    train_offline,
)
from alol_min.values import ValueConfig, prompt_states


class LengthReward:
    """A stand-in reward for tests: share of the reply's words that also occur in the prompt."""

    components = ("overlap",)
    max_total = 1.0

    def __call__(self, prompts, responses):
        scores = []
        for p, r in zip(prompts, responses):
            words = r.lower().split()
            scores.append(sum(w in p.lower() for w in words) / len(words) if words else 0.0)
        scores = np.array(scores)
        return {"overlap": scores, "total": scores}


@pytest.fixture(scope="module")
def offline_setup(micro_policy, chitchat_small):
    model, tokenizer, cfg = micro_policy
    train = chitchat_small["train"].select(range(200))
    enc = encode_pairs(
        tokenizer,
        train["prompt"],
        train["response"],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    rej = encode_pairs(
        tokenizer,
        train["prompt"],
        train["response"][1:] + train["response"][:1],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    reward = LengthReward()
    head, report = fit_value_estimate(
        model,
        tokenizer,
        chitchat_small["validation"]["prompt"][:60],
        reward,
        ValueConfig(samples_per_prompt=2, epochs=2),
        DecodeConfig(max_new_tokens=8),
        cfg.max_prompt_tokens,
    )
    passed = reference_pass(model, enc, tokenizer.pad_token_id, head=head)
    r = reward(train["prompt"], train["response"])["total"]
    summary = advantage_summary(r, passed["value"])
    data = OfflineData(
        enc,
        r,
        summary["advantage"],
        passed["ref_logp"],
        rejected=rej,
        reward_rejected=r[::-1].copy(),
        ref_logp_rejected=reference_pass(model, rej, tokenizer.pad_token_id)["ref_logp"],
        max_reward=reward.max_total,
    )
    return model, tokenizer, data, report, summary


def test_reference_pass_matches_the_model(offline_setup):
    model, tokenizer, data, _, _ = offline_setup
    batch = collate(data.encoded, [0, 5, 9], tokenizer.pad_token_id)
    with (
        torch.no_grad()
    ):  # the full softmax at every position (the pass runs the output layer at responses only)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = token_logprobs(logits, batch["input_ids"]), batch["response_mask"]
    for b, i in enumerate([0, 5, 9]):
        assert torch.allclose(logp[b][mask[b].bool()], data.ref_logp[i], atol=1e-5)


def test_neighbours_value_in_the_reference_pass(micro_policy, chitchat_small):
    """The pass sorts pairs by length: each prompt's text must still reach its own states."""

    model, tokenizer, cfg = micro_policy
    value_cfg = ValueConfig(
        estimator="neighbours", samples_per_prompt=2, neighbours=4, replies_per_neighbour=2
    )
    head, report = fit_value_estimate(
        model,
        tokenizer,
        chitchat_small["validation"]["prompt"][:40],
        LengthReward(),
        value_cfg,
        DecodeConfig(max_new_tokens=8),
        cfg.max_prompt_tokens,
    )
    assert report["estimator"] == "neighbours" and len(head.bank_prompts) == 32
    train = chitchat_small["train"].select(range(30))
    enc = encode_pairs(
        tokenizer,
        train["prompt"],
        train["response"],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    passed = reference_pass(
        model, enc, tokenizer.pad_token_id, head=head, batch_size=8, prompts=train["prompt"]
    )
    states = prompt_states(
        model,
        encode_prompts(tokenizer, train["prompt"], cfg.max_prompt_tokens),
        tokenizer.pad_token_id,
    )
    assert np.allclose(passed["value"], head.predict(states, train["prompt"]), atol=1e-5)
    with pytest.raises(ValueError, match="prompt's text"):
        reference_pass(model, enc, tokenizer.pad_token_id, head=head)

    class TextHead:  # V = 1000 x (prompt tokens) + characters of the prompt text: any mix-up shows
        def predict(self, states, prompts):
            return np.array([1000.0 * s.shape[1] + len(p) for s, p in zip(states, prompts)])

    passed = reference_pass(
        model, enc, tokenizer.pad_token_id, head=TextHead(), batch_size=8, prompts=train["prompt"]
    )
    assert np.array_equal(
        passed["value"], [1000.0 * len(s[0]) + len(p) for s, p in zip(states, train["prompt"])]
    )


def test_value_report_and_advantages(offline_setup):
    _, _, data, report, summary = offline_setup
    assert report["samples"].shape == (60, 2)
    assert {"heldout_r2", "noise_heldout", "share_of_ceiling"} <= set(report)
    assert 0 < summary["leftover_fraction"] < 1
    assert np.allclose(summary["advantage"], data.reward - (data.reward - data.advantage))


@pytest.mark.parametrize("method", sorted(m for m, s in METHODS.items() if not s.online))
def test_every_method_trains_a_few_steps(offline_setup, method, tmp_path):
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(steps=3, batch_size=4, eval_every=2, scale_steps_by_leftover=False)
    calls = []

    def validate(m):
        calls.append(1)
        return {"total": float(len(calls))}  # each evaluation "better": the last one is kept

    trained, log = train_offline(
        model,
        method,
        data,
        cfg,
        tokenizer.pad_token_id,
        validate=validate,
        run_dir=tmp_path,
        progress=False,
    )
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in log[1:])
    assert log[-1]["best"] and (tmp_path / "log.jsonl").exists()
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), model.state_dict().values())
    )
    assert changed, "the policy did not move"


@pytest.mark.parametrize("method", ["dpo", "pro"])
def test_pairwise_method_without_rejected_replies_says_so(offline_setup, method):
    model, tokenizer, data, _, _ = offline_setup
    chosen_only = OfflineData(data.encoded, data.reward, data.advantage, data.ref_logp)
    with pytest.raises(ValueError, match="rejected=True"):
        train_offline(
            model,
            method,
            chosen_only,
            OfflineConfig(steps=1, batch_size=2),
            tokenizer.pad_token_id,
            progress=False,
        )


def test_initial_scores_stand_in_for_pi_refs_validation(offline_setup):
    """Given pi_ref's scores, a run logs them as step 0 and validates only the trained policy; a
    later checkpoint is kept only if it beats them."""
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(steps=2, batch_size=4, eval_every=1, scale_steps_by_leftover=False)
    calls = []

    def validate(m):
        calls.append(1)
        return {"total": 0.5}

    trained, log = train_offline(
        model,
        "nll",
        data,
        cfg,
        tokenizer.pad_token_id,
        validate=validate,
        progress=False,
        initial_scores={"total": 0.9, "overlap": 0.9},
    )
    assert len(calls) == 2 and log[0] == {
        "step": 0,
        "examples_seen": 0,
        "val_total": 0.9,
        "val_overlap": 0.9,
    }
    assert not any(r.get("best") for r in log)  # 0.5 never beats pi_ref's 0.9: pi_ref is returned
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), model.state_dict().values())
    )


def test_importance_probe_is_logged_and_zero_at_pi_ref(offline_setup, tmp_path):
    """The probe's log r is exactly 0 for pi_theta = pi_ref, and is logged (quantiles) at each
    validation of a method that uses pi_ref; the kept checkpoint's log r goes to importance.json."""

    model, tokenizer, data, _, _ = offline_setup
    probe = probe_indices(data, 16)
    assert len(probe) == 16 and (data.advantage[probe] > 0).all()
    assert np.abs(probe_log_ratios(model, data, probe, tokenizer.pad_token_id)).max() < 1e-4
    row = probe_row(np.log(np.array([0.05, 0.5, 1.0, 1.5, 2.5])), clip=0.9)
    assert row["probe_clipped"] == pytest.approx(0.4) and row["logr_p50"] == 0.0
    cfg = OfflineConfig(
        steps=4, batch_size=4, eval_every=2, lr=1e-2, scale_steps_by_leftover=False, probe_pairs=16
    )
    calls = []

    def validate(m):
        calls.append(1)
        return {"total": float(len(calls))}

    _, log = train_offline(
        model,
        "a_lol",
        data,
        cfg,
        tokenizer.pad_token_id,
        validate=validate,
        run_dir=tmp_path,
        progress=False,
    )
    evals = [r for r in log if r["step"] in (2, 4)]
    assert all("logr_p50" in r and "probe_clipped" in r for r in evals)
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert (
        saved["step"] == 4
        and len(saved["log_ratio"]) == 16
        and np.abs(saved["log_ratio"]).max() > 0
    )
    _, log = train_offline(
        model, "nll", data, cfg, tokenizer.pad_token_id, validate=validate, progress=False
    )
    assert not any("logr_p50" in r for r in log)  # NLL has no pi_ref


def test_advantage_methods_only_draw_leftovers(offline_setup):
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(steps=10, batch_size=4, scale_steps_by_leftover=True)
    _, log = train_offline(model, "a_lol", data, cfg, tokenizer.pad_token_id, progress=False)
    p = (data.advantage > 0).mean()
    assert len(log) == max(1, int(10 * p))
    bad = OfflineData(data.encoded, data.reward, -np.abs(data.advantage) - 1e-3, data.ref_logp)
    with pytest.raises(ValueError):
        train_offline(model, "a_lol", bad, cfg, tokenizer.pad_token_id, progress=False)


@pytest.mark.parametrize("method", ["nll", "a_lol", "dpo"])
def test_grad_accum_gives_the_update_of_one_big_batch(offline_setup, method, monkeypatch):
    # SGD: update = -lr x gradient (Adam's first step, ~lr x sign(g), would amplify rounding noise)
    monkeypatch.setattr(
        torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr)
    )
    model, tokenizer, data, _, _ = offline_setup
    runs = {}
    for batch_size, grad_accum in [(8, 1), (4, 2)]:
        cfg = OfflineConfig(
            steps=1,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=0.5,
            warmup_steps=1,
            scale_steps_by_leftover=False,
        )
        runs[grad_accum] = train_offline(
            model, method, data, cfg, tokenizer.pad_token_id, progress=False
        )
    (big, big_log), (accum, accum_log) = runs[1], runs[2]
    assert big_log[0]["examples_seen"] == accum_log[0]["examples_seen"] == 8
    assert accum_log[0]["loss"] == pytest.approx(big_log[0]["loss"], rel=1e-5)
    for name, before in model.state_dict().items():
        torch.testing.assert_close(
            accum.state_dict()[name] - before, big.state_dict()[name] - before, rtol=1e-4, atol=1e-6
        )


@pytest.mark.parametrize("rule", ["keep_ref", "keep_last"])
def test_no_improvement_rule(offline_setup, rule):
    """When no validation beats pi_ref's: keep_ref returns pi_ref (kept_step 0), keep_last the last
    step's weights (kept_step = steps run)."""
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(
        steps=2, batch_size=4, eval_every=1, scale_steps_by_leftover=False, no_improvement=rule
    )
    trained, log = train_offline(
        model, "nll", data, cfg, tokenizer.pad_token_id, validate=lambda m: {"total": 0.5},
        progress=False, initial_scores={"total": 0.9},
    )  # fmt: skip
    same = all(
        torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), model.state_dict().values())
    )
    assert log[-1]["kept_step"] == (0 if rule == "keep_ref" else 2)
    assert same == (rule == "keep_ref")


@pytest.mark.parametrize("method", ["a_lol", "a_lol_good_random", "nll", "a_lol_no_clamp"])
def test_leftover_samplers_scale_steps_and_validation_interval(offline_setup, method, tmp_path):
    """Every sampler over leftovers runs int(steps p) steps and validates every int(eval_every p),
    p the leftover fraction (the paper's budget); samplers over all data run the nominal budget."""
    model, tokenizer, data, _, _ = offline_setup
    p = float((data.advantage > 0).mean())
    assert 0.1 < p < 0.95
    cfg = OfflineConfig(steps=20, batch_size=2, eval_every=10)
    _, log = train_offline(
        model, method, data, cfg, tokenizer.pad_token_id, validate=lambda m: {"total": 0.0},
        run_dir=tmp_path, progress=False, initial_scores={"total": 1.0},
    )  # fmt: skip
    scaled = method in ("a_lol", "a_lol_good_random")
    steps, every = (int(20 * p), int(10 * p)) if scaled else (20, 10)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["steps_run"] == steps and config["eval_every_run"] == every
    validated = [r["step"] for r in log[1:] if "val_total" in r]
    assert validated == sorted({*range(every, steps + 1, every), steps})


def test_dpo_logs_reward_accuracy_and_margin(offline_setup):
    """DPO's training log has TRL's reward accuracy and margin, and at pi_theta = pi_ref (step 1's
    batch, before the update) every implicit reward is 0: margin 0, accuracy 0."""
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(steps=3, batch_size=4, eval_every=3, scale_steps_by_leftover=False)
    _, log = train_offline(
        model, "dpo", data, cfg, tokenizer.pad_token_id, validate=lambda m: {"total": 0.0},
        progress=False, initial_scores={"total": 1.0},
    )  # fmt: skip
    assert log[1]["rewards_margin"] == pytest.approx(0.0, abs=1e-4)
    assert log[1]["rewards_accuracy"] == 0.0
    assert all(0.0 <= r["rewards_accuracy"] <= 1.0 for r in log[1:])
    assert "probe_rewards_accuracy" in log[-1] and "probe_rewards_margin" in log[-1]
    assert log[-1]["rewards_margin"] != 0.0  # the policy has moved


def test_pro_temperature_is_on_the_logit_scale():
    """PRO's temperature under "logit": the raw logit gap of a sigmoid reward, s_0 - s_1."""
    s = torch.tensor([2.0, -1.0, 0.3])
    recovered = reward_logit(torch.sigmoid(s), max_total=1.0)
    assert torch.allclose(recovered, s, atol=1e-5)
    assert torch.allclose(reward_logit(5 * torch.sigmoid(s), max_total=5.0), s, atol=1e-5)
    assert torch.isfinite(reward_logit(torch.tensor([0.0, 1.0]), 1.0)).all()  # clamped ends


def test_lora_offline_run_returns_the_merged_policy(offline_setup):
    pytest.importorskip("peft")
    model, tokenizer, data, _, _ = offline_setup
    cfg = OfflineConfig(steps=2, batch_size=4, lr=1e-2, scale_steps_by_leftover=False, lora_r=4)
    trained, log = train_offline(model, "a_lol", data, cfg, tokenizer.pad_token_id, progress=False)
    assert trained.state_dict().keys() == model.state_dict().keys()
    assert np.isfinite(log[-1]["loss"])
    moved = [
        k for k, v in trained.state_dict().items() if not torch.equal(v, model.state_dict()[k])
    ]
    assert moved and not any("wte" in k or "wpe" in k for k in moved)
