import numpy as np
import pytest
import torch

from alol_min.values import ValueConfig, ValueHead, fit_value_head, noise_ceiling, pad_right, predict_values, r2_score


def _states(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g)
    return [torch.randn(int(n_), d, generator=g) for n_ in lengths]


def test_value_is_unchanged_by_padding():
    torch.manual_seed(0)
    head = ValueHead(16, max_value=5.0).eval()
    states = _states(1)
    alone = predict_values(head, states)
    padded = torch.cat([states[0], torch.randn(7, 16)])  # garbage where padding would be
    batch = padded[None]
    mask = torch.zeros(1, len(padded), dtype=torch.long)
    mask[0, :len(states[0])] = 1
    with torch.no_grad():
        masked = head(batch, mask)
    assert torch.allclose(masked, torch.tensor(alone, dtype=torch.float32), atol=1e-6)
    # the paper's head (no key-padding mask) is changed by the padding: the pitfall this fixes
    head.mask_padding = False
    with torch.no_grad():
        assert not torch.allclose(head(batch, mask), masked, atol=1e-4)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    head = ValueHead(16, max_value=1.0, dropout=0.5)
    states = _states(8)
    a, b = predict_values(head, states), predict_values(head, states)
    assert np.array_equal(a, b) and ((a > 0) & (a < 1)).all()
    head.train()
    batch, mask = pad_right(states, 0.0)
    with torch.no_grad():
        assert not torch.allclose(head(batch, mask), head(batch, mask))


def test_noise_ceiling_recovers_the_between_share():
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 1.0, size=(4000, 1))  # between variance 1
    samples = mu + rng.normal(0, 2.0, size=(4000, 8))  # within variance 4
    stats = noise_ceiling(samples)
    assert stats["between_var"] == pytest.approx(1.0, rel=0.1)
    assert stats["within_var"] == pytest.approx(4.0, rel=0.05)
    assert stats["between_share"] == pytest.approx(0.2, abs=0.02)
    assert stats["ceiling_r2"] == pytest.approx(1 / (1 + 4 / 8), abs=0.03)
    # no prompt effect: ceiling ~ 0
    assert noise_ceiling(rng.normal(size=(4000, 4)))["ceiling_r2"] < 0.02
    with pytest.raises(ValueError):
        noise_ceiling(samples[:, :1])


def test_fit_learns_a_prompt_dependent_value():
    states = _states(240, seed=1)
    direction = torch.randn(16, generator=torch.Generator().manual_seed(2))
    targets = np.array([float(torch.sigmoid(s.mean(0) @ direction)) * 2 for s in states])
    head, report = fit_value_head(states, targets, max_value=2.0,
                                  cfg=ValueConfig(epochs=20, lr=5e-3, dropout=0.0))
    assert report["heldout_r2"] > 0.7
    held = report["heldout_indices"]
    assert r2_score(predict_values(head, [states[i] for i in held]), targets[held]) == pytest.approx(report["heldout_r2"])
    with pytest.raises(ValueError, match="NaN"):
        fit_value_head(states, np.full(len(states), np.nan), 2.0, ValueConfig(epochs=1))
