"""Exercises on A-LoL itself: the importance weight, the loss and two of its variants, priority
sampling, and one whole training step (the paper's Eq. 3-4 and Algorithm 1; docs/method.md §2-4)."""

from __future__ import annotations

import torch
from torch import nn

from alol_min.advantage import draw_batch, sampling_weights
from alol_min.exercises.checker import Case, Exercise, compare_arrays
from alol_min.exercises.inputs import advantages, log_probs
from alol_min.importance import sequence_importance_weight
from alol_min.lm.batching import token_logprobs
from alol_min.losses import a_lol_kl_loss, a_lol_loss, a_lol_seq_loss

MASK_HINT = (
    "sum over response tokens only (mask = 1); use torch.where(mask.bool(), x, 0.0), not "
    "mask * x, because padding may hold -inf or NaN and 0 * inf = NaN"
)


def _with(extra: dict, **kw):
    def make(g):
        return {**log_probs(g, **kw), **{k: v(g) if callable(v) else v for k, v in extra.items()}}

    return make


def _detached(out, inputs) -> str | None:
    if isinstance(out, torch.Tensor) and out.requires_grad:
        return "the weight still requires grad: it is a constant in A-LoL's gradient, sg[.]"
    return None


# ---- 1. the importance weight ---------------------------------------------------------------

IMPORTANCE_WEIGHT = Exercise(
    "importance weight r_hat",
    sequence_importance_weight,
    [
        Case("random batch, eps = 0.9", _with({"clip": 0.9}, spread=0.3),
             "r = exp(sum_t (logp_t - ref_logp_t)) over the response, then clamp r to [1 - eps, 1 + eps]"),
        Case("ratios far outside the clip, eps = 0.2", _with({"clip": 0.2}, spread=1.5),
             "clamp r itself, not log r: r_hat lies in [1 - eps, 1 + eps] = [0.8, 1.2]"),
        Case("padding holds -inf", _with({"clip": 0.9}, pad="-inf"), MASK_HINT),
        Case("padding holds NaN", _with({"clip": 0.9}, pad="NaN"), MASK_HINT),
        Case("clip = None: no clipping", _with({"clip": None}, spread=1.0),
             "clip=None means the weight is r itself, unclamped"),
        Case("clip = 0: r_hat = 1", _with({"clip": 0.0}), "eps = 0 clamps r to [1, 1]"),
        Case("the weight is a constant", _with({"clip": 0.9}), "detach the weight (sg[.])",
             verify=_detached),
    ],
    "importance_weight(logp, ref_logp, mask, clip) -> r_hat [B]",
)  # fmt: skip


# ---- 2-4. the A-LoL loss and two variants ----------------------------------------------------


FAR_HINT = (
    "clamp r itself (not log r) to [1 - eps, 1 + eps], and keep the gradient of the NLL "
    "(this is not PPO's min of the clipped and unclipped terms)"
)


def _alol_cases(loss_kw: dict, spread: float = 0.5, far_hint: str = FAR_HINT) -> list[Case]:
    def a(sign):
        return lambda g: advantages(g, 4, sign)

    return [
        Case("random batch, mixed signs of A", _with({"advantage": a("mixed"), **loss_kw}, spread=spread),
             "L = A+ * sg[weight] * NLL with A+ = max(A, 0) and NLL = -sum_t logp_t", grad_of="logp"),
        Case("every A <= 0", _with({"advantage": a("non-positive"), **loss_kw}),
             "A+ = max(A, 0): a point with A <= 0 contributes no A-weighted loss", grad_of="logp"),
        Case("padding holds -inf", _with({"advantage": a("positive"), **loss_kw}, pad="-inf"),
             MASK_HINT, grad_of="logp"),
        Case("ratios far outside the clip", _with({"advantage": a("positive"), **loss_kw}, spread=2.0),
             far_hint, grad_of="logp"),
    ]  # fmt: skip


A_LOL_LOSS = Exercise(
    "A-LoL loss",
    a_lol_loss,
    _alol_cases({"clip": 0.9}) + [
        Case("clip = 0.2", _with({"advantage": lambda g: advantages(g, 4), "clip": 0.2}, spread=1.0),
             "r_hat = clamp(r, 1 - eps, 1 + eps) with eps the `clip` argument", grad_of="logp"),
    ],
    "a_lol_loss(logp, mask, ref_logp, advantage, clip) -> L [B]",
)  # fmt: skip

A_LOL_SEQ_LOSS = Exercise(
    "A-LoL seq loss",
    a_lol_seq_loss,
    _alol_cases({"clip": 0.9}, spread=1.0, far_hint="clamp each rho_t = exp(logp_t - ref_logp_t) "
                "to [1 - eps, 1 + eps] and detach it") + [
        Case("per-token ratios, eps = 0.2", _with({"advantage": lambda g: advantages(g, 4, "positive"),
                                                 "clip": 0.2}, spread=0.5),
             "one ratio per token, rho_t = exp(logp_t - ref_logp_t), each clamped to [1 - eps, 1 + eps]: "
             "L = A+ * sum_t sg[rho_t] * (-logp_t)", grad_of="logp"),
    ],
    "a_lol_seq_loss(logp, mask, ref_logp, advantage, clip) -> L [B]",
)  # fmt: skip

A_LOL_KL_LOSS = Exercise(
    "A-LoL KL loss",
    a_lol_kl_loss,
    _alol_cases({"kl_beta": 0.1}, far_hint="A-LoL KL has no weight to clip: its KL term's "
                "gradient is beta * grad log pi_theta, whatever the ratio") + [
        Case("a large beta", _with({"advantage": lambda g: advantages(g, 4), "kl_beta": 2.0}),
             "L = A+ * NLL + beta * (log pi_theta(y|x) - log pi_ref(y|x)); the KL term is not "
             "multiplied by A+ and is not detached", grad_of="logp"),
    ],
    "a_lol_kl_loss(logp, mask, ref_logp, advantage, kl_beta) -> L [B]",
)  # fmt: skip


# ---- 5. priority sampling --------------------------------------------------------------------


def priority_probabilities(advantage: torch.Tensor) -> torch.Tensor:
    """p_i = A+_i / sum_j A+_j: A-LoL's sampling distribution over the training set."""
    w = sampling_weights("advantage", advantage=advantage)
    return w / w.sum()


def _adv(n: int, sign: str):
    return lambda g: {"advantage": advantages(g, n, sign)}


PRIORITY_SAMPLING = Exercise(
    "priority sampling p ~ A+",
    priority_probabilities,
    [
        Case("mixed signs of A", _adv(12, "mixed"),
             "p_i = max(A_i, 0) / sum_j max(A_j, 0): points with A <= 0 are never drawn, and p sums to 1"),
        Case("every A > 0", _adv(12, "positive"), "p_i = A_i / sum_j A_j, not a softmax of A"),
        Case("one point with A > 0", lambda g: {"advantage": torch.tensor([-1.0, 0.0, 0.3, -0.2])},
             "only the one positive point can be drawn: p = [0, 0, 1, 0]"),
        Case("every A <= 0", _adv(6, "non-positive"),
             "with no positive advantage there is nothing to sample: raise ValueError"),
    ],
    "priority_probabilities(advantage) -> p [N]",
)  # fmt: skip


# ---- 6. one A-LoL training step ----------------------------------------------------------------


class ToyLM(nn.Module):
    """A bigram language model: logits for token t+1 from token t alone. Small enough for a
    checker to train in milliseconds, with the same [B, L] -> [B, L, V] interface as an LM."""

    def __init__(self, vocab: int = 11, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(input_ids)))


def response_log_probs(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """logp[b, t] = log pi(input_ids[b, t+1] | input_ids[b, <= t]).  [B, L-1]"""
    return token_logprobs(model(input_ids), input_ids)


def alol_step(model, optimizer, data: dict, batch_size: int, generator, clip: float) -> float:
    """One A-LoL step (the paper's Algorithm 1, one iteration):

        i_1..i_B ~ p_i = A+_i / sum_j A+_j           (with replacement, from `generator`)
        L = mean_b A+_b sg[clip(r_b, 1 +- eps)] NLL_theta(y_b | x_b)
        theta <- optimizer step on grad L             (gradients zeroed first)

    data: input_ids [N, L], response_mask [N, L-1], ref_logp [N, L-1], advantage [N].
    Returns L as a float."""
    idx = draw_batch(
        sampling_weights("advantage", advantage=data["advantage"]), batch_size, generator
    )
    logp = response_log_probs(model, data["input_ids"][idx])
    mask = data["response_mask"][idx]
    loss = a_lol_loss(logp, mask, data["ref_logp"][idx], data["advantage"][idx], clip).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _toy_data(g: torch.Generator, n: int = 10, length: int = 7, vocab: int = 11) -> dict:
    input_ids = torch.randint(0, vocab, (n, length), generator=g)
    starts = torch.randint(1, length - 2, (n,), generator=g)
    ends = torch.randint(length - 2, length + 1, (n,), generator=g)
    target = torch.arange(1, length)[None, :]
    mask = ((target >= starts[:, None]) & (target < ends[:, None])).float()
    ref = ToyLM(vocab)
    _init(ref, g)
    with torch.no_grad():
        ref_logp = response_log_probs(ref, input_ids)
    return {"input_ids": input_ids, "response_mask": mask, "ref_logp": ref_logp,
            "advantage": advantages(g, n)}  # fmt: skip


def _init(model: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))


def _step_case(steps: int, clip: float, sign: str = "mixed", lr: float = 0.5):
    def make(g):
        data = _toy_data(g)
        if sign == "positive":
            data["advantage"] = data["advantage"].abs() + 0.05
        return {
            "data": data,
            "steps": steps,
            "clip": clip,
            "lr": lr,
            "init_seed": int(torch.randint(0, 2**31 - 1, (1,), generator=g)),
        }

    return make


def run_steps(fn, inputs: dict) -> dict:
    """Train a fresh ToyLM (seeded) with `fn` for `steps` steps; the losses and final parameters."""
    model = ToyLM()
    _init(model, torch.Generator().manual_seed(inputs["init_seed"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=inputs["lr"])
    generator = torch.Generator().manual_seed(inputs["init_seed"] + 1)
    losses = [fn(model, optimizer, inputs["data"], 4, generator, inputs["clip"])
              for _ in range(inputs["steps"])]  # fmt: skip
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"losses": losses, "params": params}


def _compare_steps(expected: dict, got: dict) -> str | None:
    for i, (e, o) in enumerate(zip(expected["losses"], got["losses"])):
        if o is None:
            return f"step {i + 1} returned None: did it forget to `return` the loss?"
        try:
            o = float(o)
        except (TypeError, ValueError):
            return f"step {i + 1} returned {type(o).__name__}, expected the loss as a float"
        problem = compare_arrays([e], [o], 1e-4, 1e-6)
        if problem:
            return f"step {i + 1}'s loss: {problem}"
    problem = compare_arrays(expected["params"], got["params"], 1e-4, 1e-6)
    if problem:
        return f"the losses match but the parameters after the last step differ: {problem}"
    return None


ALOL_STEP = Exercise(
    "one A-LoL training step",
    alol_step,
    [
        Case("one step, mixed A", _step_case(1, 0.9),
             "draw the batch with torch.multinomial(A+, batch_size, replacement=True, "
             "generator=generator), then L = mean_b of A+ * sg[clip(r)] * NLL"),
        Case("one step, every A > 0, ratios at the clip", _step_case(1, 0.2, "positive"),
             "NLL_theta sums -logp over response tokens only (response_mask = 1), never the prompt"),
        Case("one step, the clip wide open (eps = 5)", _step_case(1, 5.0),
             "the weight sg[clip(r)] is a constant: detach it, or its own gradient joins the update"),
        Case("three steps in a row", _step_case(3, 0.9),
             "zero the gradients before each backward pass, or they add up across steps"),
    ],
    "alol_step(model, optimizer, data, batch_size, generator, clip) -> loss",
    runner=run_steps,
    compare=_compare_steps,
)  # fmt: skip
