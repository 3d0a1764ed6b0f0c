import typing

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alol_min.cache import cache_key, config_inputs
from alol_min.extensions.neighbour_value import NeighbourValue, fit_neighbour_value
from alol_min.run.config import ReproduceConfig
from alol_min.values import (
    ESTIMATORS,
    RidgeValue,
    ValueConfig,
    ValueHead,
    _ridge,
    fit_value,
    noise_ceiling,
    pad_right,
    pooled_features,
    predict_values,
    prompt_states,
    r2_score,
)


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
    mask[0, : len(states[0])] = 1
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


def _layered(states, n_layers=3, seed=3):
    """[L, d] states -> [n_layers, L, d], the last layer being the given states."""
    g = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.randn(n_layers - 1, *s.shape, generator=g), s[None]]) for s in states]


@pytest.mark.parametrize("estimator", ["ridge", "attention"])
def test_fit_learns_a_prompt_dependent_value(estimator):
    states = _layered(_states(240, seed=1))
    direction = torch.randn(16, generator=torch.Generator().manual_seed(2))
    targets = np.array([float(torch.sigmoid(s[-1].mean(0) @ direction)) * 2 for s in states])
    cfg = ValueConfig(estimator=estimator, epochs=20, lr=5e-3, dropout=0.0)
    head, report = fit_value(states, targets, max_value=2.0, cfg=cfg)
    assert report["heldout_r2"] > 0.7 and report["estimator"] == estimator
    held = report["heldout_indices"]
    assert r2_score(head.predict([states[i] for i in held]), targets[held]) == pytest.approx(
        report["heldout_r2"]
    )
    with pytest.raises(ValueError, match="NaN"):
        fit_value(states, np.full(len(states), np.nan), 2.0, ValueConfig(epochs=1))


def test_unknown_estimator_is_named():
    states = _layered(_states(10))
    with pytest.raises(ValueError, match="'lasso'"):
        fit_value(states, np.zeros(10), 1.0, ValueConfig(estimator="lasso"))


def test_ridge_primal_equals_dual_and_pooling_ignores_padding():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(30, 12)), rng.normal(size=30)
    w_primal, b = _ridge(z, y, 3.0)  # d < n: primal
    w_dual = z.T @ np.linalg.solve(z @ z.T + 3.0 * np.eye(30), y - b)
    assert np.allclose(w_primal, w_dual)
    # phi(x) only reads the prompt's own positions: the same prompt gives the same V in any batch
    states = _layered(_states(40, seed=4))
    targets = rng.uniform(0, 1, size=40)
    ridge = RidgeValue(pooled_features(states).shape[1], 1.0).fit(pooled_features(states), targets)
    assert ((ridge.predict(states) >= 0) & (ridge.predict(states) <= 1)).all()
    # the chosen penalty is one of the grid's and is kept in the state dict (saved with the run)
    assert float(ridge.state_dict()["alpha"]) > 0


def test_prompt_states_do_not_depend_on_batch_padding():

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64)
    )
    short, long = [5, 6, 7], list(range(1, 30))
    alone = prompt_states(model, [short], pad_id=0)[0]
    batched = prompt_states(model, [short, long], pad_id=0, batch_size=2)[0]
    assert alone.shape == (3, 3, 32)  # [embeddings + 2 layers, L, d]
    assert torch.allclose(alone, batched, atol=1e-5)
    assert np.allclose(pooled_features([alone]), pooled_features([batched]), atol=1e-5)


class _PairReward:
    """R(x, y) = x's own score, read from its text, + 0.1 when y is the reply written for x."""

    components = ("own", "match")
    max_total = 1.1

    def __call__(self, prompts, responses):
        own = np.array([int(p.split()[1]) / 10 for p in prompts])
        match = np.array([0.1 * (r == f"reply to {p}") for p, r in zip(prompts, responses)])
        return {"own": own, "match": match, "total": own + match}


def _pair_task(n=150):
    prompts = [f"prompt {i % 10} #{i}" for i in range(n)]
    replies = np.array([[f"reply to {p}"] * 2 for p in prompts], dtype=object)
    targets = _PairReward()(prompts, [f"reply to {p}" for p in prompts])["total"]
    return (
        _layered(_states(n, seed=5)),
        prompts,
        replies,
        targets,
    )  # states: noise, unrelated to the reward


def test_neighbours_value_reads_the_reward_of_x_where_the_states_say_nothing():

    states, prompts, replies, targets = _pair_task()
    ridge, ridge_report = fit_value(states, targets, 1.1, ValueConfig(estimator="ridge"))
    cfg = ValueConfig(estimator="neighbours", neighbours=8, replies_per_neighbour=2)
    value, report = fit_neighbour_value(
        states, targets, 1.1, cfg, prompts=prompts, replies=replies, reward=_PairReward()
    )
    assert ridge_report["heldout_r2"] < 0.3 < 0.9 < report["heldout_r2"]
    assert isinstance(value, NeighbourValue) and report["replies_per_neighbour"] == 2
    held = report["heldout_indices"]
    # the held-out prompts' replies never enter the bank
    assert not {f"reply to {prompts[i]}" for i in held} & set(value.bank_replies.ravel())
    # while fitting, a prompt's own replies are left out of its T (with them, "match" would be > 0)
    assert sorted(value.bank_prompts) == sorted(
        prompts[i] for i in range(len(prompts)) if i not in set(held)
    )
    match, units = value.outputs.index("match"), value.bank_units.numpy()
    assert (value.borrowed(value.bank_prompts, units, leave_out_self=True)[:, match] == 0).all()
    assert (value.borrowed(value.bank_prompts, units, leave_out_self=False)[:, match] > 0).all()
    # the same T in chunks of 7 (row i of chunk c is bank row 7c + i)
    assert np.array_equal(
        value.borrowed(value.bank_prompts, units, leave_out_self=True, chunk=7),
        value.borrowed(value.bank_prompts, units, leave_out_self=True),
    )
    with pytest.raises(ValueError, match="prompt's text"):
        value.predict([states[i] for i in held])


def test_neighbours_value_reloads_from_its_state_dict(tmp_path):

    states, prompts, replies, targets = _pair_task(60)
    cfg = ValueConfig(estimator="neighbours", neighbours=5, replies_per_neighbour=1)
    value, _ = fit_neighbour_value(
        states, targets, 1.1, cfg, prompts=prompts, replies=replies, reward=_PairReward()
    )
    torch.save(value.state_dict(), tmp_path / "value_head.pt")
    loaded = NeighbourValue.load(
        torch.load(tmp_path / "value_head.pt", weights_only=True), _PairReward(), 1.1
    )
    assert loaded.bank_prompts == value.bank_prompts and loaded.bank_replies.shape == (48, 1)
    assert np.array_equal(loaded.predict(states, prompts), value.predict(states, prompts))


def test_neighbours_value_asks_for_what_it_needs():
    states, prompts, replies, targets = _pair_task(20)
    with pytest.raises(ValueError, match="not in the paper: fit it with alol_min.extensions"):
        fit_value(states, targets, 1.1, ValueConfig(estimator="neighbours"))
    with pytest.raises(ValueError, match="prompts=, replies=, reward="):
        fit_neighbour_value(
            states,
            targets,
            1.1,
            ValueConfig(estimator="neighbours"),
            prompts=prompts,
            replies=replies,
        )

    class NaNReward(_PairReward):
        def __call__(self, prompts, responses):
            scores = super().__call__(prompts, responses)
            scores["own"][[p.endswith("#7") for p in prompts]] = np.nan
            return scores

    with pytest.raises(ValueError, match="non-finite score for prompt .*#7"):
        fit_neighbour_value(
            states,
            targets,
            1.1,
            ValueConfig(estimator="neighbours"),
            prompts=prompts,
            replies=replies,
            reward=NaNReward(),
        )
    with pytest.raises(ValueError, match="row of k replies"):
        fit_neighbour_value(
            states,
            targets,
            1.1,
            ValueConfig(estimator="neighbours"),
            prompts=prompts,
            replies=replies.ravel(),
            reward=_PairReward(),
        )


def test_value_cache_inputs_keep_older_keys():

    # the fields of ValueConfig before the neighbours estimator: keys of cached ridge / attention runs
    older = [
        "estimator",
        "samples_per_prompt",
        "epochs",
        "lr",
        "weight_decay",
        "batch_size",
        "dropout",
        "holdout_fraction",
        "seed",
    ]
    assert list(config_inputs(ValueConfig())) == older
    assert list(config_inputs(ValueConfig(estimator="attention", seed=3))) == older
    assert cache_key(config_inputs(ValueConfig())) == cache_key(
        {
            "estimator": "ridge",
            "samples_per_prompt": 4,
            "epochs": 40,
            "lr": 1e-3,
            "weight_decay": 0.01,
            "batch_size": 32,
            "dropout": 0.1,
            "holdout_fraction": 0.2,
            "seed": 0,
        }
    )
    assert config_inputs(ValueConfig(estimator="neighbours", neighbours=16))["neighbours"] == 16
    hints = typing.get_type_hints(type(ReproduceConfig().value))
    assert typing.get_args(hints["estimator"]) == ESTIMATORS  # the CLI's --value.estimator choices
