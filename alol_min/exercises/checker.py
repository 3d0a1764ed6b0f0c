"""The machinery every exercise checker shares: cases, comparison, and messages a student can read.

A checker calls the student's function and the library's reference on the same inputs, case by
case (random inputs from a fixed seed, then edge cases: padding, A <= 0, the clip bounds), and
reports the first case that differs, in words: which case, what was expected, what came back, and
a hint. It never lets a traceback through: an exception in the student's code becomes one line
that names it. A function that still raises NotImplementedError is reported as "not implemented
yet", so a fresh student notebook runs from top to bottom.
"""

from __future__ import annotations

import copy
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

STATUSES = ("passed", "failed", "not implemented")


@dataclass
class Case:
    """One input on which the student's answer must match the reference."""

    name: str
    """What the case is, as the student reads it: "padding holds -inf", "every A <= 0"."""
    make: Callable[[torch.Generator], dict]
    """Builds the keyword arguments from a seeded generator."""
    hint: str = ""
    """Shown when this case fails: the usual mistake that makes it fail."""
    grad_of: str | None = None
    """An input that requires grad: the gradient of sum(output) with respect to it must match
    too (catches a missing or misplaced detach)."""
    verify: Callable[[object, dict], str | None] | None = None
    """Further test of the student's output alone; returns what is wrong, or None."""


@dataclass
class CheckResult:
    """What a checker found. True when the answer passed; printing it gives the message."""

    exercise: str
    status: str
    message: str
    case: str | None = None
    """The failing case's name (None when every case passed or nothing ran)."""
    cases_run: int = 0

    def __bool__(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        return self.message

    __repr__ = __str__


@dataclass
class Exercise:
    title: str
    reference: Callable
    cases: list[Case]
    signature: str
    """The function the student writes, as it is called: shown with "not implemented yet"."""
    rtol: float = 1e-5
    atol: float = 1e-6
    compare: Callable[[object, object], str | None] | None = None
    """Replaces the default comparison of outputs (for outputs that are not arrays)."""
    runner: Callable[[Callable, dict], object] | None = None
    """Calls a function on a case's inputs (default: fn(**inputs)); used by the training step."""


NONE_RETURNED = "your function returned None: did it forget to `return` its result?"


def _fmt(x) -> str:
    a = np.asarray(x, dtype=float).reshape(-1)
    shown = ", ".join(f"{v:.4f}" for v in a[:6])
    return f"[{shown}{', ...' if a.size > 6 else ''}]"


def _as_array(x, what: str) -> tuple[np.ndarray | None, str | None]:
    if x is None:
        return None, NONE_RETURNED
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy(), None
    if isinstance(x, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in x) and x:
        try:
            return torch.stack([v.detach().double().cpu() for v in x]).numpy(), None
        except RuntimeError:
            pass
    try:
        return np.asarray(x, dtype=float), None
    except (TypeError, ValueError, RuntimeError):
        return None, f"{what} is a {type(x).__name__}, expected a tensor or an array of numbers"


def compare_arrays(expected, got, rtol: float, atol: float) -> str | None:
    """None when `got` matches `expected`; otherwise what differs, in one sentence."""
    exp, _ = _as_array(expected, "the reference")
    out, problem = _as_array(got, "your answer")
    if problem:
        return problem
    if out.shape != exp.shape:
        return f"expected shape {exp.shape}, got shape {out.shape}"
    if np.isnan(out).any() and not np.isnan(exp).any():
        return f"your answer has NaN at {int(np.isnan(out).sum())} positions: {_fmt(out)}"
    if not np.allclose(out, exp, rtol=rtol, atol=atol, equal_nan=True):
        worst = int(np.nanargmax(np.abs(out - exp).reshape(-1)))
        return (
            f"expected {_fmt(exp)}, got {_fmt(out)} (largest difference at flat index {worst}: "
            f"expected {exp.reshape(-1)[worst]:.4f}, got {out.reshape(-1)[worst]:.4f})"
        )
    return None


def compare_parts(names: tuple[str, ...], rtol: float = 1e-5, atol: float = 1e-6):
    """A comparison of outputs that are tuples, such as (advantages, returns): each part by
    `compare_arrays`, the first that differs named."""

    def compare(expected, got) -> str | None:
        if not isinstance(got, (tuple, list)) or len(got) != len(names):
            return f"expected a tuple ({', '.join(names)}), got a {type(got).__name__}"
        for name, e, o in zip(names, expected, got):
            problem = compare_arrays(e, o, rtol, atol)
            if problem:
                return f"{name}: {problem}"
        return None

    return compare


def _fmt_any(x) -> str:
    arr, problem = _as_array(x, "it")
    return _fmt(arr) if problem is None else type(x).__name__


def _clone(inputs: dict) -> dict:
    """A deep copy of a case's inputs, with fresh leaf tensors where gradients are taken."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().clone().requires_grad_(v.requires_grad)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _grad(output, wrt: torch.Tensor) -> torch.Tensor | None:
    if not isinstance(output, torch.Tensor) or not output.requires_grad:
        return None
    (g,) = torch.autograd.grad(output.sum(), wrt, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def _error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run_exercise(ex: Exercise, fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check `fn` against `ex.reference` on every case. The result displays as its message (the
    last line of a notebook cell shows it; elsewhere, print it)."""
    return _run(ex, fn, seed)


def _not_implemented(ex: Exercise, fn: Callable, error: NotImplementedError) -> CheckResult:
    """ "not implemented yet", naming the function that raised when it is not `fn` itself."""
    frames = traceback.extract_tb(error.__traceback__)
    raiser = frames[-1].name if frames else None
    own = getattr(fn, "__name__", None)
    if raiser in (own, "<lambda>", None) or own in (None, "<lambda>"):
        message = f"{ex.title}: not implemented yet (write {ex.signature})"
    else:
        message = f"{ex.title}: not implemented yet: it calls {raiser}(), which is not written yet"
    return CheckResult(ex.title, "not implemented", message)


def _run(ex: Exercise, fn: Callable, seed: int) -> CheckResult:
    with torch.enable_grad():  # gradients are compared even if the caller switched them off
        return _cases(ex, fn, seed)


def _cases(ex: Exercise, fn: Callable, seed: int) -> CheckResult:
    call = ex.runner or (lambda f, inputs: f(**inputs))
    for i, case in enumerate(ex.cases):
        inputs = case.make(torch.Generator().manual_seed(seed + 1000 * i))
        ref_in, mine = _clone(inputs), _clone(inputs)
        try:
            expected = call(ex.reference, ref_in)
        except ValueError as e:  # an input the method refuses: the answer must refuse it too
            expected = e
        try:
            got = call(fn, mine)
        except NotImplementedError as e:
            return _not_implemented(ex, fn, e)
        except Exception as e:  # the student's bug, reported in one line, never a traceback
            if isinstance(expected, ValueError) and isinstance(e, ValueError):
                continue
            return _failed(ex, case, i, f"your function raised {_error_line(e)}")
        if isinstance(expected, ValueError):
            return _failed(
                ex,
                case,
                i,
                f"expected a ValueError ({expected}), but your function returned {_fmt_any(got)}",
            )
        try:
            problem = _judge(ex, case, expected, got, ref_in, mine)
        except Exception as e:  # e.g. a backward pass through the student's in-place edit
            problem = f"checking your answer raised {_error_line(e)}"
        if problem is not None:
            return _failed(ex, case, i, problem)
    n = len(ex.cases)
    return CheckResult(ex.title, "passed", f"{ex.title}: correct on all {n} cases", None, n)


def _judge(ex: Exercise, case: Case, expected, got, ref_in: dict, mine: dict) -> str | None:
    """What is wrong with `got` on this case (values, the case's own test, the gradient), or None."""
    if got is None:
        return NONE_RETURNED
    compare = ex.compare or (lambda a, b: compare_arrays(a, b, ex.rtol, ex.atol))
    problem = compare(expected, got)
    if problem is None and case.verify is not None:
        problem = case.verify(got, mine)
    if problem is not None or case.grad_of is None:
        return problem
    g_ref = _grad(expected, ref_in[case.grad_of])
    g_got = _grad(got, mine[case.grad_of])
    if g_got is None and g_ref is not None:
        return (
            f"your output carries no gradient with respect to {case.grad_of}: "
            "is the whole result detached or computed outside autograd?"
        )
    if g_ref is not None:
        diff = compare_arrays(g_ref, g_got, ex.rtol, ex.atol)
        if diff is not None:
            return (
                f"the values match but the gradient with respect to {case.grad_of} does not: {diff}"
            )
    return None


def _failed(ex: Exercise, case: Case, i: int, problem: str) -> CheckResult:
    hint = f" Hint: {case.hint}" if case.hint else ""
    return CheckResult(
        ex.title,
        "failed",
        f"{ex.title}: wrong on case {i + 1} of {len(ex.cases)} ({case.name}): {problem}.{hint}",
        case.name,
        i + 1,
    )
