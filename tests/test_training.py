import copy
import json

import pytest
import torch

from alol_min.lm.models import ModelConfig
from alol_min.lm.reference import encode_split, reference_policy
from alol_min.lm.sft import SFTConfig, reply_perplexity, train_nll


def test_sft_loss_decreases_on_micro(micro_policy, chitchat_small, tmp_path):
    model, tokenizer, cfg = micro_policy
    model = copy.deepcopy(model)
    train = encode_split(tokenizer, chitchat_small["train"], cfg)
    val = encode_split(tokenizer, chitchat_small["validation"], cfg)
    before = reply_perplexity(model, val, tokenizer.pad_token_id)
    sft = SFTConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=15, eval_pairs=100)
    log = train_nll(
        model, train, val, sft, tokenizer.pad_token_id, run_dir=tmp_path, progress=False
    )
    first = sum(r["token_nll"] for r in log[:5]) / 5
    last = sum(r["token_nll"] for r in log[-5:]) / 5
    assert last < 0.9 * first
    assert log[-1]["val_reply_ppl"] < 0.5 * before
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"step", "loss", "lr", "examples_seen"} <= set(rows[0])
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 30


def test_reference_policy_is_cached_and_keyed(chitchat_small, capsys):
    cfg = ModelConfig.preset("micro")
    sft = SFTConfig(steps=3, batch_size=8, eval_every=3, eval_pairs=20)
    _, _, folder = reference_policy(chitchat_small, cfg, sft, progress=False)
    assert "building" in capsys.readouterr().err
    _, _, again = reference_policy(chitchat_small, cfg, sft, progress=False)
    assert again == folder and "reusing" in capsys.readouterr().err
    _, _, other = reference_policy(
        chitchat_small,
        cfg,
        SFTConfig(steps=3, batch_size=8, eval_every=3, eval_pairs=20, seed=1),
        progress=False,
    )
    assert other != folder


# Scaling options: grad_accum, grad_checkpointing, bf16 (see training's docstring)


@pytest.fixture
def plain_sgd(monkeypatch):
    """Swap AdamW for SGD: its update is -lr x gradient, so equal updates mean equal gradients
    (Adam's first step, about lr x sign(g), would blow rounding noise of near-zero gradients up to lr)."""
    monkeypatch.setattr(
        torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr)
    )


def _one_step(micro_policy, chitchat_small, steps=1, **overrides):
    model, tokenizer, cfg = micro_policy
    model = copy.deepcopy(model)
    train = encode_split(tokenizer, chitchat_small["train"].select(range(64)), cfg)
    val = encode_split(tokenizer, chitchat_small["validation"].select(range(8)), cfg)
    sft = SFTConfig(
        **{
            "steps": steps,
            "batch_size": 8,
            "lr": 0.5,
            "warmup_steps": 1,
            "eval_every": steps,
            "eval_pairs": 8,
            **overrides,
        }
    )
    log = train_nll(model, train, val, sft, tokenizer.pad_token_id, progress=False)
    return model, log


def test_grad_accum_gives_the_update_of_one_big_batch(micro_policy, chitchat_small, plain_sgd):
    start = micro_policy[0].state_dict()
    big, big_log = _one_step(micro_policy, chitchat_small, batch_size=8, grad_accum=1)
    accum, accum_log = _one_step(micro_policy, chitchat_small, batch_size=4, grad_accum=2)
    assert big_log[0]["examples_seen"] == accum_log[0]["examples_seen"] == 8
    assert accum_log[0]["loss"] == pytest.approx(big_log[0]["loss"], rel=1e-5)
    moved = 0.0
    for name, before in start.items():
        d_big, d_accum = big.state_dict()[name] - before, accum.state_dict()[name] - before
        torch.testing.assert_close(d_accum, d_big, rtol=1e-4, atol=1e-6)
        moved = max(moved, float(d_big.abs().max()))
    assert moved > 1e-3  # the step was not empty
    half, _ = _one_step(
        micro_policy, chitchat_small, batch_size=4, grad_accum=1
    )  # a different batch: differs
    assert not torch.allclose(half.transformer.wte.weight, big.transformer.wte.weight, atol=1e-6)


def test_grad_checkpointing_gives_the_same_losses(micro_policy, chitchat_small, plain_sgd):
    plain, plain_log = _one_step(micro_policy, chitchat_small, steps=2)
    ckpt, ckpt_log = _one_step(micro_policy, chitchat_small, steps=2, grad_checkpointing=True)
    assert [r["loss"] for r in ckpt_log] == pytest.approx([r["loss"] for r in plain_log], rel=1e-5)
    torch.testing.assert_close(ckpt.state_dict(), plain.state_dict(), rtol=1e-4, atol=1e-6)
    assert (
        not ckpt.is_activation_checkpointing and not ckpt.training
    )  # switched off again afterwards


def test_bf16_runs_on_cpu_close_to_fp32(micro_policy, chitchat_small):
    _, fp32 = _one_step(micro_policy, chitchat_small)
    _, bf16 = _one_step(micro_policy, chitchat_small, bf16=True)
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=0.02)
