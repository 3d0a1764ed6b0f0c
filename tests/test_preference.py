import math

import numpy as np
import pytest
import torch

from alol_min.tasks.preference import (
    PreferenceReward,
    bradley_terry_loss,
    left_pad,
    pairwise_accuracy,
    preference_scores,
    train_preference_model,
)
from alol_min.tasks.tiny_hh import load_tiny_hh

# A fast setting: clean labels, 40 steps of a 2 x 64 model (about 15 s on 2 busy cores).
FAST = dict(
    steps=40, batch_size=16, lr=3e-3, max_tokens=48, n_embd=64, n_head=2, vocab_size=1024, seed=0
)


@pytest.fixture(scope="module")
def trained():
    data, _ = load_tiny_hh(n_train=2000, n_validation=200, n_test=10, noise=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: oversubscribed threads are 20x slower
    try:
        model, tokenizer, stats = train_preference_model(
            data["train"], eval_dataset=data["validation"], **FAST
        )
    finally:
        torch.set_num_threads(threads)
    return data, PreferenceReward(model, tokenizer), stats


def test_bradley_terry_loss_by_hand():
    s_w, s_l = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    by_hand = np.mean([math.log(1 + math.exp(-2.0)), math.log(2.0), math.log(1 + math.exp(2.0))])
    assert bradley_terry_loss(s_w, s_l).item() == pytest.approx(by_hand, rel=1e-6)


def test_beats_chance_on_held_out_pairs(trained):
    data, reward, stats = trained
    assert stats["eval_accuracy"] > 0.65
    assert stats["final_loss"] < stats["loss_curve"][0]["loss"]
    val = data["validation"].select(range(50))
    r_w, r_l = (reward(val["prompt"], val[c])["total"] for c in ("chosen", "rejected"))
    assert pairwise_accuracy(reward, val["prompt"], val["chosen"], val["rejected"]) == np.mean(
        r_w > r_l
    )


def test_reward_interface_and_padding_invariance(trained):
    data, reward, _ = trained
    prompts, responses = (
        list(data["validation"]["prompt"][:20]),
        list(data["validation"]["chosen"][:20]),
    )
    out = reward(prompts, responses)
    assert reward.components == ("preference",) and reward.max_total == 1.0
    assert set(out) == {"preference", "total"} and out["total"].shape == (20,)
    assert np.all((out["total"] > 0) & (out["total"] < 1)) and np.array_equal(
        out["total"], out["preference"]
    )
    # a score does not depend on the batch it is computed in (left padding + real-token positions)
    alone = np.array(
        [reward(prompts[i : i + 1], responses[i : i + 1])["total"][0] for i in range(5)]
    )
    np.testing.assert_allclose(alone, out["total"][:5], atol=1e-5)
    batch = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with torch.no_grad():
        assert preference_scores(reward.model, batch).shape == (2,)


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    data, reward, _ = trained
    prompts, responses = (
        list(data["validation"]["prompt"][:50]),
        list(data["validation"]["rejected"][:50]),
    )
    reward.save(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = PreferenceReward.load(tmp_path)
    assert loaded.max_tokens == FAST["max_tokens"]
    assert np.array_equal(loaded(prompts, responses)["total"], reward(prompts, responses)["total"])
