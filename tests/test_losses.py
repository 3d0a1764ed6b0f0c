"""Every method's loss: gradients against the closed forms of docs/method.md §7.2, pairwise losses
by hand, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from alol_min.advantage import SAMPLER_KINDS
from alol_min.losses import METHODS, method_loss, pairwise_loss

B, T, V = 4, 6, 5
CLIP, BETA, FLOOR = 0.5, 0.3, 0.1
MASK = torch.tensor(
    [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
)
REWARD = torch.tensor([0.9, 0.2, 0.6, 0.0], dtype=torch.float64)
ADVANTAGE = torch.tensor([0.7, -0.3, 0.2, 1.1], dtype=torch.float64)


def make_batch(seed=0):
    """Leaf logits of pi_theta, response tokens, and a pi_ref that is close for the first two
    examples (r inside the clip range) and far for the last two (r clipped)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    tokens = torch.randint(V, (B, T), generator=g)
    far = torch.tensor([0.05, 0.1, 2.0, 3.0], dtype=torch.float64).view(B, 1, 1)
    ref_logits = logits + far * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    ref_logp = F.log_softmax(ref_logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    ref_logp = ref_logp.masked_fill(MASK == 0, float("nan"))  # padding must never be read
    return logits, tokens, ref_logp


def forward_backward(method, **kwargs):
    """Batch-mean loss; returns (per-example loss, dL/dlogp, dL/dlogits, logp, logits)."""
    logits, tokens, ref_logp = make_batch()
    logits.requires_grad_(True)
    logp = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    logp = logp.masked_fill(MASK == 0, -float("inf"))  # garbage on padding
    logp.retain_grad()
    loss = method_loss(
        method,
        logp=logp,
        mask=MASK,
        ref_logp=ref_logp,
        reward=REWARD,
        advantage=ADVANTAGE,
        clip=CLIP,
        kl_beta=BETA,
        gold_floor=FLOOR,
        **kwargs,
    )
    loss.mean().backward()
    return loss.detach(), logp.grad, logits.grad, logp.detach(), logits.detach(), ref_logp, tokens


def closed_form(method, logp, ref_logp):
    """(L_i, dL_batch/dlogp_t) from docs/method.md §7.2's table, written out independently of the library."""
    m = MASK.double()
    lp = torch.where(MASK.bool(), logp, 0.0)
    lref = torch.where(MASK.bool(), ref_logp, 0.0)
    nll = -lp.sum(-1)
    r = (lp - lref).sum(-1).exp().clamp(1 - CLIP, 1 + CLIP)
    rho = (lp - lref).exp().clamp(1 - CLIP, 1 + CLIP)
    p_floor = lp.exp().clamp(min=FLOOR)
    a_plus = ADVANTAGE.clamp(min=0)
    col = lambda x: x[:, None]  # noqa: E731
    table = {
        "nll": (nll, -m),
        "wbc": (REWARD * nll, -col(REWARD) * m),
        "r_gold": (-REWARD * (p_floor * lp).sum(-1), -col(REWARD) * p_floor * m),
        "r_lol": (REWARD * r * nll, -col(REWARD * r) * m),
        "a_lol": (a_plus * r * nll, -col(a_plus * r) * m),
        "a_lol_good_random": (a_plus * r * nll, -col(a_plus * r) * m),
        "a_lol_no_clamp": (ADVANTAGE * r * nll, -col(ADVANTAGE * r) * m),
        "a_lol_ref_free": (a_plus * nll, -col(a_plus) * m),
        "a_lol_seq": (-a_plus * (rho * lp).sum(-1), -col(a_plus) * rho * m),
        "a_lol_kl": (a_plus * nll + BETA * (lp - lref).sum(-1), -col(a_plus - BETA) * m),
    }
    loss, grad = table[method]
    return loss, grad / B


SINGLE = [name for name, spec in METHODS.items() if not spec.pairwise and not spec.online]


def test_fixture_exercises_both_sides_of_every_clamp():
    _, _, _, logp, _, ref_logp, _ = forward_backward("nll")
    lp, lref = torch.where(MASK.bool(), logp, 0.0), torch.where(MASK.bool(), ref_logp, 0.0)
    r = (lp - lref).sum(-1).exp()
    inside = (r > 1 - CLIP) & (r < 1 + CLIP)
    assert inside.any() and not inside.all()
    rho = (lp - lref).exp()[MASK.bool()]
    assert ((rho > 1 - CLIP) & (rho < 1 + CLIP)).any() and (
        (rho < 1 - CLIP) | (rho > 1 + CLIP)
    ).any()
    p = logp.exp()[MASK.bool()]
    assert (p < FLOOR).any() and (p > FLOOR).any()
    assert (ADVANTAGE < 0).any() and (ADVANTAGE.clamp(min=0) < BETA).any()


@pytest.mark.parametrize("method", SINGLE)
def test_loss_and_gradient_match_closed_form(method):
    loss, grad_logp, grad_logits, logp, logits, ref_logp, tokens = forward_backward(method)
    want_loss, want_grad = closed_form(method, logp, ref_logp)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad_logp, want_grad)  # 0 on padding, no NaN from the garbage there
    # chain rule through log_softmax: dlogp_t/dlogits_tv = 1[v = y_t] - softmax_tv
    dlogp_dlogits = F.one_hot(tokens, V).double() - logits.softmax(-1)
    torch.testing.assert_close(grad_logits, want_grad[..., None] * dlogp_dlogits)


def test_a_lol_with_clip_zero_is_ref_free_and_clip_none_is_unclipped():
    logits, tokens, ref_logp = make_batch()
    logp = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    kw = dict(logp=logp, mask=MASK, ref_logp=ref_logp, advantage=ADVANTAGE)
    torch.testing.assert_close(
        method_loss("a_lol", clip=0.0, **kw), method_loss("a_lol_ref_free", **kw)
    )
    unclipped = method_loss("a_lol", clip=None, **kw)
    lr = torch.where(MASK.bool(), logp - ref_logp, 0.0).sum(-1)
    torch.testing.assert_close(
        unclipped, ADVANTAGE.clamp(min=0) * lr.exp() * -torch.where(MASK.bool(), logp, 0.0).sum(-1)
    )


def test_non_positive_advantage_gives_zero_loss_and_gradient_except_no_clamp():
    logits, tokens, ref_logp = make_batch()
    advantage = torch.tensor([-0.5, 0.0, -2.0, -0.1], dtype=torch.float64)
    for method in ("a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_good_random", "a_lol_no_clamp"):
        leaf = logits.clone().requires_grad_(True)
        logp = F.log_softmax(leaf, -1).gather(-1, tokens[..., None]).squeeze(-1)
        loss = method_loss(method, logp=logp, mask=MASK, ref_logp=ref_logp, advantage=advantage)
        loss.mean().backward()
        if method == "a_lol_no_clamp":
            assert (loss[advantage < 0] < 0).all()  # negative-A points are pushed down
            assert leaf.grad.abs().sum() > 0
        else:
            assert torch.count_nonzero(loss) == 0 and torch.count_nonzero(leaf.grad) == 0, method


def test_reward_and_advantage_may_be_lists_or_numpy():
    logits, tokens, _ = make_batch()
    logp = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    a = method_loss("wbc", logp=logp, mask=MASK, reward=REWARD.tolist())
    b = method_loss("wbc", logp=logp, mask=MASK, reward=REWARD.numpy())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, REWARD * -torch.where(MASK.bool(), logp, 0.0).sum(-1))


# ---- pairwise --------------------------------------------------------------------------


def pair(requires_grad=False):
    """chosen: 2 tokens (sum -3.0); rejected: 2 of 3 tokens (sum -1.0)."""
    w = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=requires_grad)
    l_ = torch.tensor([[-0.5, -0.5, -4.0]], dtype=torch.float64, requires_grad=requires_grad)
    return dict(
        logp_chosen=w,
        mask_chosen=torch.tensor([[1, 1]]),
        logp_rejected=l_,
        mask_rejected=torch.tensor([[1, 1, 0]]),
    )


REF = dict(
    ref_logp_chosen=torch.tensor([[-1.25, -1.25]], dtype=torch.float64),  # sum -2.5
    ref_logp_rejected=torch.tensor([[-1.0, -0.5, 0.0]], dtype=torch.float64),
)  # sum -1.5


def test_dpo_by_hand():
    # h = 0.1 * ((-3 - -1) - (-2.5 - -1.5)) = -0.1;  L = -log sigmoid(-0.1) = log(1 + e^0.1)
    loss = pairwise_loss("dpo", **pair(), **REF, beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.1)))
    # beta scales the margin: h = 2 * -1 = -2
    assert pairwise_loss("dpo", **pair(), **REF, beta=2.0).item() == pytest.approx(
        math.log(1 + math.exp(2))
    )


def test_dpo_gradient_by_hand():
    p = pair(requires_grad=True)
    pairwise_loss("dpo", **p, **REF, beta=0.1).sum().backward()
    s = 1 / (1 + math.exp(-0.1))  # sigmoid(-h) with h = -0.1: dL/dh = -sigmoid(-h)
    assert p["logp_chosen"].grad[0].tolist() == pytest.approx([-0.1 * s, -0.1 * s])
    assert p["logp_rejected"].grad[0].tolist() == pytest.approx([0.1 * s, 0.1 * s, 0.0])


def test_dpo_ref_free_ignores_the_reference():
    # h = 0.1 * (-3 - -1) = -0.2
    expected = math.log(1 + math.exp(0.2))
    assert pairwise_loss("dpo_ref_free", **pair()).item() == pytest.approx(expected)
    assert pairwise_loss("dpo_ref_free", **pair(), **REF).item() == pytest.approx(expected)
    same = dict(ref_logp_chosen=pair()["logp_chosen"], ref_logp_rejected=pair()["logp_rejected"])
    assert pairwise_loss("dpo", **pair(), **same).item() == pytest.approx(math.log(2))


def test_pro_by_hand():
    # s_0 = -3/2, s_1 = -1/2 (length-normalised), T = 2.0 - 0.5 = 1.5
    loss = pairwise_loss(
        "pro",
        **pair(),
        reward_chosen=torch.tensor([2.0]),
        reward_rejected=torch.tensor([0.5]),
        sft_weight=0.05,
    )
    s0t, s1t = -1.5 * 1.5, -0.5 * 1.5
    ranking = math.log(1e-10 + math.exp(s0t) + math.exp(s1t)) - s0t
    assert loss.item() == pytest.approx(ranking + 0.05 * 3.0)  # SFT on the chosen: -(-1 - 2)
    no_sft = pairwise_loss(
        "pro", **pair(), reward_chosen=[2.0], reward_rejected=[0.5], sft_weight=0.0
    )
    assert no_sft.item() == pytest.approx(ranking)


def test_pro_is_stable_for_large_scores():
    p = pair()
    p["logp_chosen"] = p["logp_chosen"] * 400
    loss = pairwise_loss("pro", **p, reward_chosen=[10.0], reward_rejected=[-10.0], sft_weight=0.0)
    # s_0 T = -12000, s_1 T = -10: the ranking term is ~ 12000 - 10, finite
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(12000 - 10, rel=1e-6)


# ---- registry and bad input ------------------------------------------------------------


def test_registry_matches_spec():
    expected_sampler = {
        "nll": "uniform",
        "wbc": "reward",
        "r_gold": "reward",
        "r_lol": "reward",
        "a_lol": "advantage",
        "a_lol_ref_free": "advantage",
        "a_lol_seq": "advantage",
        "a_lol_kl": "advantage",
        "dpo": "uniform",
        "dpo_ref_free": "uniform",
        "pro": "uniform",
    }
    for name, sampler in expected_sampler.items():
        assert METHODS[name].sampler == sampler and not METHODS[name].ablation, name
    assert {n for n, s in METHODS.items() if s.needs_ref and not s.ablation} == {
        "r_lol",
        "a_lol",
        "a_lol_seq",
        "a_lol_kl",
        "dpo",
        "ppo",
    }
    assert {n for n, s in METHODS.items() if s.needs_value} == {
        n for n in METHODS if n.startswith("a_lol")
    }
    assert {n for n, s in METHODS.items() if s.pairwise} == {"dpo", "dpo_ref_free", "pro"}
    offline = {n: s for n, s in METHODS.items() if not s.online}
    assert all(s.sampler in SAMPLER_KINDS and s.name == n for n, s in offline.items())
    assert {n for n, s in METHODS.items() if s.online} == {"ppo"}
    # rewards read per training pair: the reward calls of the training set
    assert {n: s.rewards_per_pair for n, s in METHODS.items() if not s.ablation} == {
        "nll": 0, "wbc": 1, "r_gold": 1, "r_lol": 1, "a_lol": 1, "a_lol_ref_free": 1,
        "a_lol_seq": 1, "a_lol_kl": 1, "dpo": 0, "dpo_ref_free": 0, "pro": 2, "ppo": 0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="'ppo' trains online and has no offline loss"):
        method_loss("ppo", logp=torch.zeros(1, 2), mask=torch.ones(1, 2))
    assert len({s.label for s in METHODS.values()}) == len(METHODS)
    assert METHODS["a_lol_no_clamp"].ablation and METHODS["a_lol_no_clamp"].sampler == "uniform"


@pytest.mark.parametrize("method", SINGLE)
def test_missing_inputs_raise_exactly_when_the_registry_says_they_are_needed(method):
    logits, tokens, ref_logp = make_batch()
    logp = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    full = dict(
        logp=logp, mask=MASK, ref_logp=ref_logp, reward=REWARD, advantage=ADVANTAGE, kl_beta=BETA
    )
    assert torch.isfinite(method_loss(method, **full)).all()
    spec = METHODS[method]
    without_ref = {**full, "ref_logp": None}
    if spec.needs_ref:
        with pytest.raises(ValueError, match=f"method '{method}' needs ref_logp"):
            method_loss(method, **without_ref)
    else:
        method_loss(method, **without_ref)
    without_a = {**full, "advantage": None}
    if spec.needs_value:
        with pytest.raises(ValueError, match=f"method '{method}' needs advantage"):
            method_loss(method, **without_a)
    else:
        method_loss(method, **without_a)


def test_pairwise_missing_inputs_raise():
    with pytest.raises(ValueError, match="method 'dpo' needs ref_logp_chosen"):
        pairwise_loss("dpo", **pair())
    with pytest.raises(ValueError, match="method 'pro' needs reward_chosen"):
        pairwise_loss("pro", **pair())
    with pytest.raises(ValueError, match="batch size"):
        p = pair()
        p["logp_rejected"], p["mask_rejected"] = (
            p["logp_rejected"].repeat(2, 1),
            p["mask_rejected"].repeat(2, 1),
        )
        pairwise_loss("dpo_ref_free", **p)


def test_bad_input_raises_useful_errors():
    logits, tokens, ref_logp = make_batch()
    logp = F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    kw = dict(logp=logp, mask=MASK, ref_logp=ref_logp)
    with pytest.raises(ValueError, match="unknown method 'trpo'.*a_lol_seq"):
        method_loss("trpo", **kw)
    with pytest.raises(ValueError, match="use pairwise_loss"):
        method_loss("dpo", **kw)
    with pytest.raises(ValueError, match="use method_loss"):
        pairwise_loss("a_lol", **pair())
    with pytest.raises(ValueError, match="method 'wbc' needs reward"):
        method_loss("wbc", **kw)
    nan_reward = REWARD.clone()
    nan_reward[2] = float("nan")
    with pytest.raises(ValueError, match="reward contains NaN"):
        method_loss("r_lol", **kw, reward=nan_reward)
    with pytest.raises(ValueError, match="advantage contains NaN"):
        method_loss("a_lol", **kw, advantage=[0.1, float("nan"), 0.2, 0.3])
    with pytest.raises(ValueError, match=r"advantage must have shape \[B\]"):
        method_loss("a_lol", **kw, advantage=ADVANTAGE[:3])
    with pytest.raises(ValueError, match="kl_beta > 0"):
        method_loss("a_lol_kl", **kw, advantage=ADVANTAGE)
    with pytest.raises(ValueError, match="ref_logp shape"):
        method_loss("a_lol", **{**kw, "ref_logp": ref_logp[:, :3]}, advantage=ADVANTAGE)
    bad = logp.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logp has NaN"):
        method_loss("nll", logp=bad, mask=MASK)
