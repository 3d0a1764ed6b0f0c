"""Each checker passes the library's answer and fails planted wrong answers, naming the case."""

from functools import partial
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nbclient import NotebookClient

from alol_min.cli import main
from alol_min.exercises import EXERCISES, check
from alol_min.exercises.alol import response_log_probs
from alol_min.exercises.student import STUB, strip_solutions, student_paths, write_students


def _seq(x, mask):
    return torch.where(mask.bool(), x, 0.0).sum(-1)


# ---- planted wrong answers: (exercise, what is wrong, function, the case that must catch it) ----


def iw_no_detach(logp, ref_logp, mask, clip):
    r = _seq(logp - ref_logp, mask).exp()
    return r if clip is None else r.clamp(1 - clip, 1 + clip)


def iw_clip_log(logp, ref_logp, mask, clip):
    log_r = _seq(logp - ref_logp, mask).detach()
    return (log_r if clip is None else log_r.clamp(1 - clip, 1 + clip)).exp()


def iw_mask_multiply(logp, ref_logp, mask, clip):
    r = ((logp - ref_logp) * mask).sum(-1).detach().exp()
    return r if clip is None else r.clamp(1 - clip, 1 + clip)


def iw_ignores_none(logp, ref_logp, mask, clip):
    return _seq(logp - ref_logp, mask).detach().exp().clamp(1 - (clip or 0.9), 1 + (clip or 0.9))


def _w(logp, ref_logp, mask, clip):
    return _seq(logp - ref_logp, mask).detach().exp().clamp(1 - clip, 1 + clip)


def al_no_clamp(logp, mask, ref_logp, advantage, clip):
    return advantage * _w(logp, ref_logp, mask, clip) * -_seq(logp, mask)


def al_weight_not_detached(logp, mask, ref_logp, advantage, clip):
    w = _seq(logp - ref_logp, mask).exp().clamp(1 - clip, 1 + clip)
    return advantage.clamp(min=0) * w * -_seq(logp, mask)


def al_padding_counted(logp, mask, ref_logp, advantage, clip):
    w = (logp - ref_logp).nan_to_num(0.0).sum(-1).detach().exp().clamp(1 - clip, 1 + clip)
    return advantage.clamp(min=0) * w * -logp.sum(-1)


def al_mean_tokens(logp, mask, ref_logp, advantage, clip):
    nll = -_seq(logp, mask) / mask.sum(-1)
    return advantage.clamp(min=0) * _w(logp, ref_logp, mask, clip) * nll


def seq_sequence_ratio(logp, mask, ref_logp, advantage, clip):
    return advantage.clamp(min=0) * _w(logp, ref_logp, mask, clip) * -_seq(logp, mask)


def seq_rho_not_detached(logp, mask, ref_logp, advantage, clip):
    rho = torch.where(mask.bool(), (logp - ref_logp), 0.0).exp().clamp(1 - clip, 1 + clip)
    return advantage.clamp(min=0) * -_seq(rho * logp, mask)


def seq_no_clip(logp, mask, ref_logp, advantage, clip):
    rho = torch.where(mask.bool(), (logp - ref_logp), 0.0).detach().exp()
    return advantage.clamp(min=0) * -_seq(rho * logp, mask)


def kl_detached(logp, mask, ref_logp, advantage, kl_beta):
    kl = _seq(logp - ref_logp, mask).detach()
    return advantage.clamp(min=0) * -_seq(logp, mask) + kl_beta * kl


def kl_times_advantage(logp, mask, ref_logp, advantage, kl_beta):
    kl = _seq(logp - ref_logp, mask)
    return advantage.clamp(min=0) * (-_seq(logp, mask) + kl_beta * kl)


def kl_sign(logp, mask, ref_logp, advantage, kl_beta):
    kl = _seq(logp - ref_logp, mask)
    return advantage.clamp(min=0) * -_seq(logp, mask) - kl_beta * kl


def ps_signed(advantage):
    return advantage / advantage.sum()


def ps_softmax(advantage):
    return torch.softmax(advantage, 0)


def ps_abs(advantage):
    return advantage.abs() / advantage.abs().sum()


def ps_unnormalised(advantage):
    return advantage.clamp(min=0)


def _step(model, optimizer, data, batch_size, generator, clip, *, sample="priority",
          detach=True, mask_prompt=True, zero_grad=True, reduce="mean"):  # fmt: skip
    a = data["advantage"]
    if sample == "priority":
        idx = torch.multinomial(a.clamp(min=0), batch_size, replacement=True, generator=generator)
    else:
        idx = torch.randint(0, len(a), (batch_size,), generator=generator)
    logp = response_log_probs(model, data["input_ids"][idx])
    mask = data["response_mask"][idx] if mask_prompt else torch.ones_like(logp)
    log_r = _seq(logp - data["ref_logp"][idx], mask)
    w = (log_r.detach() if detach else log_r).exp().clamp(1 - clip, 1 + clip)
    per = a[idx].clamp(min=0) * w * -_seq(logp, mask)
    loss = per.mean() if reduce == "mean" else per.sum()
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _ceiling(samples, correct=True, floor=True, ddof=1):
    k = samples.shape[1]
    if k < 2:
        raise ValueError("k >= 2")
    within = samples.var(axis=1, ddof=ddof).mean()
    between = samples.mean(axis=1).var(ddof=ddof) - (within / k if correct else 0.0)
    between = max(between, 0.0) if floor else between
    return between / (between + within / k)


def _ridge(z, y, alpha, penalise_bias=False, centre=True, use_alpha=True):
    if penalise_bias:
        z1 = np.hstack([z, np.ones((len(z), 1))])
        w = np.linalg.solve(z1.T @ z1 + alpha * np.eye(z1.shape[1]), z1.T @ y)
        return w[:-1], float(w[-1])
    b = float(y.mean()) if centre else 0.0
    a = alpha if use_alpha else 1e-9
    return np.linalg.solve(z.T @ z + a * np.eye(z.shape[1]), z.T @ (y - b)), b


def _dpo(
    logp_chosen,
    mask_chosen,
    logp_rejected,
    mask_rejected,
    ref_logp_chosen,
    ref_logp_rejected,
    beta,
    *,
    naive_log=False,
    sign=1,
    mean=False,
    no_ref=False,
):
    red = (lambda x, m: _seq(x, m) / m.sum(-1)) if mean else _seq
    mw, ml = mask_chosen, mask_rejected
    h = red(logp_chosen, mw) - red(logp_rejected, ml)
    if not no_ref:
        h = h - sign * (red(ref_logp_chosen, mw) - red(ref_logp_rejected, ml))
    return -torch.log(torch.sigmoid(beta * h)) if naive_log else F.softplus(-beta * h)


def _surrogate(logp, old_logp, advantages, mask, cliprange, *, use_min=False,
               clip_adv=False, plain_mean=False):  # fmt: skip
    rho = torch.exp(logp - old_logp)
    un = -advantages * rho
    cl = (
        (-advantages.clamp(-cliprange, cliprange) * rho)
        if clip_adv
        else (-advantages * rho.clamp(1 - cliprange, 1 + cliprange))
    )
    per = torch.minimum(un, cl) if use_min else torch.maximum(un, cl)
    return per.mean() if plain_mean else (per * mask).sum() / mask.sum()


def iw_ignores_mask(logp, ref_logp, mask, clip):
    r = (logp - ref_logp).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1).detach().exp()
    return r if clip is None else r.clamp(1 - clip, 1 + clip)


def _gae(rewards, values, mask, gamma, lam, *, no_lambda=False, bootstrap_pad=False, forward=False,
         no_gamma=False):  # fmt: skip
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    nv = torch.zeros(rewards.shape[0])
    na = torch.zeros(rewards.shape[0])
    order = range(T) if forward else reversed(range(T))
    for t in order:
        m = mask[:, t]
        delta = rewards[:, t] + gamma * nv - values[:, t]
        carry = 0 if no_lambda else (lam if no_gamma else gamma * lam)
        adv[:, t] = (delta + carry * na) * m
        nv = values[:, t] if bootstrap_pad else values[:, t] * m
        na = adv[:, t]
    return adv, (adv + values) * mask


PLANTED = [
    ("importance_weight", "not detached", iw_no_detach, "constant"),
    ("importance_weight", "clip applied to log r", iw_clip_log, "random batch"),
    ("importance_weight", "padding multiplied by the mask", iw_mask_multiply, "-inf"),
    ("importance_weight", "clip=None ignored", iw_ignores_none, "clip = None"),
    ("a_lol_loss", "A not clamped at 0", al_no_clamp, "mixed signs"),
    ("a_lol_loss", "weight not detached", al_weight_not_detached, "mixed signs"),
    ("a_lol_loss", "padding counted", al_padding_counted, "mixed signs"),
    ("a_lol_loss", "NLL averaged over tokens", al_mean_tokens, "mixed signs"),
    ("a_lol_seq_loss", "one sequence ratio", seq_sequence_ratio, "mixed signs"),
    ("a_lol_seq_loss", "rho not detached", seq_rho_not_detached, "mixed signs"),
    ("a_lol_seq_loss", "rho not clipped", seq_no_clip, "outside the clip"),
    ("a_lol_kl_loss", "KL detached", kl_detached, "mixed signs"),
    ("a_lol_kl_loss", "KL multiplied by A+", kl_times_advantage, "mixed signs"),
    ("a_lol_kl_loss", "KL with the wrong sign", kl_sign, "mixed signs"),
    ("priority_sampling", "p ~ A, negatives kept", ps_signed, "mixed signs"),
    ("priority_sampling", "softmax of A", ps_softmax, "mixed signs"),
    ("priority_sampling", "p ~ |A|", ps_abs, "mixed signs"),
    ("priority_sampling", "not normalised", ps_unnormalised, "mixed signs"),
    ("alol_step", "uniform sampling", partial(_step, sample="uniform"), "one step, mixed"),
    ("alol_step", "weight not detached", partial(_step, detach=False), "wide open"),
    ("alol_step", "prompt tokens counted", partial(_step, mask_prompt=False), "one step, mixed"),
    ("alol_step", "gradients never zeroed", partial(_step, zero_grad=False), "three steps"),
    ("alol_step", "summed over the batch", partial(_step, reduce="sum"), "one step, mixed"),
    ("noise_ceiling", "no noise correction", partial(_ceiling, correct=False), "k = 4"),
    ("noise_ceiling", "no floor at 0", partial(_ceiling, floor=False), "no prompt effect"),
    ("noise_ceiling", "population variances", partial(_ceiling, ddof=0), "k = 4"),
    ("ridge_value", "bias penalised", partial(_ridge, penalise_bias=True), "more prompts"),
    ("ridge_value", "y not centred", partial(_ridge, centre=False), "more prompts"),
    ("ridge_value", "alpha ignored", partial(_ridge, use_alpha=False), "more prompts"),
    ("dpo_loss", "log of sigmoid", partial(_dpo, naive_log=True), "margin of 30"),
    ("dpo_loss", "reference term added", partial(_dpo, sign=-1), "random pairs"),
    ("dpo_loss", "log-probs averaged over tokens", partial(_dpo, mean=True), "random pairs"),
    ("dpo_loss", "no reference", partial(_dpo, no_ref=True), "random pairs"),
    ("ppo_surrogate", "min instead of max", partial(_surrogate, use_min=True), "mixed signs"),
    ("ppo_surrogate", "advantage clipped", partial(_surrogate, clip_adv=True), "rho = 1"),
    ("ppo_surrogate", "padding averaged in", partial(_surrogate, plain_mean=True), "rho = 1"),
    ("gae", "no lambda", partial(_gae, no_lambda=True), "lambda = 0.95"),
    ("gae", "bootstraps from padding", partial(_gae, bootstrap_pad=True), "past the end"),
    ("gae", "runs forwards in time", partial(_gae, forward=True), "lambda = 0.95"),
    (
        "gae",
        "no gamma in the recursion",
        partial(_gae, no_gamma=True),
        "gamma = 0.9, lambda = 0.95",
    ),
    ("importance_weight", "mask ignored", iw_ignores_mask, "random batch"),
]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_passes(name):
    result = check(name, EXERCISES[name].reference)
    assert result.status == "passed", result.message
    assert result.cases_run == len(EXERCISES[name].cases) >= 3


@pytest.mark.parametrize(
    ("name", "what", "fn", "case"), PLANTED, ids=[f"{p[0]}-{p[1]}" for p in PLANTED]
)
def test_planted_wrong_answer_fails_on_its_case(name, what, fn, case):
    result = check(name, fn)
    assert result.status == "failed", f"{what}: {result.message}"
    assert case in result.case, f"{what}: caught on {result.case!r}, expected a case with {case!r}"
    assert "Hint:" in result.message and "Traceback" not in result.message
    assert len(result.message.splitlines()) == 1


def test_every_checker_has_three_planted_answers():
    counts = {name: sum(p[0] == name for p in PLANTED) for name in EXERCISES}
    assert min(counts.values()) >= 3, counts


def test_not_implemented_and_crashes_are_one_line():
    def stub(*args, **kwargs):
        raise NotImplementedError

    def crash(*args, **kwargs):
        return [1, 2][5]

    for name, ex in EXERCISES.items():
        r = check(name, stub)
        assert r.status == "not implemented" and not r
        assert repr(r) == f"{ex.title}: not implemented yet (write {ex.signature})"
        r = check(name, crash)
        assert r.status == "failed" and "raised IndexError: list index out of range" in r.message


def _step_float32(model, optimizer, data, batch_size, generator, clip):
    a = data["advantage"]
    idx = torch.multinomial(a.clamp(min=0), batch_size, replacement=True, generator=generator)
    logp = response_log_probs(model, data["input_ids"][idx])
    mask = data["response_mask"][idx].bool()
    w = torch.where(mask, logp - data["ref_logp"][idx], 0.0).sum(-1).detach().exp()
    loss = a[idx].clamp(min=0) * w.clamp(1 - clip, 1 + clip) * -torch.where(mask, logp, 0.0).sum(-1)
    optimizer.zero_grad()
    loss.mean().backward()
    optimizer.step()
    return loss.mean().item()


OTHER_CORRECT = [
    ("dpo_loss", "-logsigmoid", lambda logp_chosen, mask_chosen, logp_rejected, mask_rejected,
     ref_logp_chosen, ref_logp_rejected, beta: -F.logsigmoid(beta * (
         (_seq(logp_chosen, mask_chosen) - _seq(ref_logp_chosen, mask_chosen))
         - (_seq(logp_rejected, mask_rejected) - _seq(ref_logp_rejected, mask_rejected))))),
    ("importance_weight", "numpy float64 output", lambda logp, ref_logp, mask, clip: np.clip(
        np.exp(_seq(logp - ref_logp, mask).detach().double().clamp(-50, 50).numpy()),
        *((1 - clip, 1 + clip) if clip is not None else (None, np.inf)))),
    ("alol_step", "float32 weights in multinomial", _step_float32),
    ("priority_sampling", "a list of floats", lambda advantage: (
        (advantage.clamp(min=0) / advantage.clamp(min=0).sum()).tolist()
        if (advantage > 0).any() else (_ for _ in ()).throw(ValueError("none")))),
]  # fmt: skip


@pytest.mark.parametrize(("name", "what", "fn"), OTHER_CORRECT, ids=[o[1] for o in OTHER_CORRECT])
def test_other_correct_answers_pass(name, what, fn):
    result = check(name, fn)
    assert result.status == "passed", f"{what}: {result.message}"


def test_odd_answers_are_named_not_raised():
    for name in ("gae", "ridge_value", "noise_ceiling", "alol_step"):
        assert (
            "returned None: did it forget to `return`" in check(name, lambda *a, **k: None).message
        )
    grads = check("importance_weight", lambda logp, ref_logp, mask, clip: list(logp.sum(-1)))
    assert grads.status == "failed" and "Traceback" not in grads.message

    def inplace(logp, ref_logp, mask, clip):
        r = torch.where(mask.bool(), logp, 0.0).sum(-1).exp()
        r.clamp_(0, 1)
        return r

    assert check("importance_weight", inplace).status == "failed"


def test_a_missing_helper_is_named():
    def importance_weight(logp, ref_logp, mask, clip):
        raise NotImplementedError

    def a_lol_loss(logp, mask, ref_logp, advantage, clip):
        return advantage * importance_weight(logp, ref_logp, mask, clip)

    r = check("a_lol_loss", a_lol_loss)
    assert r.status == "not implemented"
    assert "it calls importance_weight(), which is not written yet" in r.message


def test_checks_are_deterministic():
    a = check("a_lol_loss", al_no_clamp).message
    assert a == check("a_lol_loss", al_no_clamp).message


def test_unknown_exercise():
    with pytest.raises(ValueError, match="unknown exercise 'nope'"):
        check("nope", lambda: None)


def test_wrong_output_shape_is_named():
    r = check("importance_weight", lambda logp, ref_logp, mask, clip: logp.detach())
    assert "expected shape (4,), got shape (4, 6)" in r.message


# ---- student and solution notebooks from one source -------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_strip_solutions_keeps_indentation_and_checks_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\ncheck(f)"
    assert strip_solutions(src) == f"def f(x):\n    {STUB}\n\ncheck(f)"
    for bad, problem in [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2"),
    ]:
        with pytest.raises(ValueError, match=problem):
            strip_solutions(bad, "nb")


def test_student_notebooks_are_generated_from_the_solutions():
    assert write_students(NOTEBOOKS, check=True) == [], "run `python -m alol_min exercises`"
    for solution, student in student_paths(NOTEBOOKS):
        nb = nbformat.read(student, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "### BEGIN SOLUTION" not in sources
        assert sources.count(STUB) == len(EXERCISES)


@pytest.mark.slow
def test_student_notebook_runs_and_reports_not_implemented():
    """Executed as a student first opens it: no error, and each checker says "not implemented yet"."""
    for _, student in student_paths(NOTEBOOKS):
        nb = nbformat.read(student, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3").execute()
        printed = [
            o["data"]["text/plain"]
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "execute_result"
        ]
        expected = [
            f"{ex.title}: not implemented yet (write {ex.signature})" for ex in EXERCISES.values()
        ]
        assert printed == expected
        assert not any(o.output_type == "error" for c in nb.cells for o in c.get("outputs", []))


def test_exercises_command_writes_then_checks(tmp_path, capsys):
    (tmp_path / "10_exercises.ipynb").write_text((NOTEBOOKS / "10_exercises.ipynb").read_text())
    with pytest.raises(SystemExit) as stop:
        main(["exercises", "--notebooks", str(tmp_path), "--check"])
    assert stop.value.code == 1 and "stale" in capsys.readouterr().out
    main(["exercises", "--notebooks", str(tmp_path)])
    assert (tmp_path / "student" / "10_exercises.ipynb").exists()
    main(["exercises", "--notebooks", str(tmp_path), "--check"])
    assert "student notebooks are up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["exercises", "--notebooks", str(tmp_path / "missing")])
    assert stop.value.code == 2
