"""Command line: `python -m alol_min {reproduce,train-ref,plot} --help`.

The flags are derived from the config dataclasses by tyro (`run/config.py`): tyro reads the field
docstrings the configs already carry, so every field is a flag, its docstring is the help and its
default is the one default; nested configs become dotted flags (`--offline.lr`). A preset
(`--preset`, per `--task`) is the starting point the flags override. Every argument error is one
line on stderr, naming the flag, with exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.lm.reference import reference_metrics, reference_policy
from alol_min.lm.sft import SFTConfig
from alol_min.run.config import PRESETS, ConfigError, ReproduceConfig, check_config, preset
from alol_min.run.plots import plot_all, plot_noisy
from alol_min.run.reproduce import run
from alol_min.tasks import TASKS, ChitchatConfig, load_task

COMMANDS = {
    "reproduce": "the main job: pi_ref, reward, V_ref, advantages, every method, test evaluation",
    "train-ref": "train (or reuse) the reference policy pi_ref by NLL, print its perplexity and samples",
    "plot": "rebuild figures/ and the tables from results/*/ logs",
}


@dataclass
class TrainRefConfig:
    """Train (or reuse, from the cache) pi_ref by NLL on a task's training responses."""

    task: str = "chitchat"
    """chitchat or tiny-hh."""
    model: str = "tiny"
    """Model preset: micro, tiny, gpt2, smollm2-135m."""
    data: ChitchatConfig = field(default_factory=ChitchatConfig)
    """chitchat's splits."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """pi_ref's NLL training."""
    samples: int = 5
    """Sampled replies to print."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class PlotConfig:
    """Rebuild every figure and table from the logged results."""

    results: str = "results"
    """Results folder (one subfolder per task with a summary.csv)."""
    figures: str = "figures"
    """Where the figures and tables go."""


def fail(message: str) -> None:
    """One line on stderr and exit status 2, as argparse does; no traceback."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def parse(cls, argv: list[str], prog: str, default=None):
    """tyro.cli, with its error box turned into one line on stderr (exit status 2)."""
    stream = io.StringIO()
    try:
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
            return tyro.cli(cls, args=argv, prog=prog, default=default)
    except SystemExit as stop:
        text = stream.getvalue()
        if not stop.code:  # --help
            sys.stdout.write(text)
            raise
        fail(f"{prog}: error: {one_line(text)}")


def one_line(box: str) -> str:
    """The message of tyro's error box: its first line of text, plus the flag's usage if shown."""
    rows = [re.sub(r"^[\s│╭╰─┌└]+|[\s│╮╯─]+$", "", row) for row in box.splitlines()]
    rows = [row for row in rows if row and not set(row) <= set("─ ")]
    message = next(
        (
            r
            for r in rows
            if not r.startswith(("Value error", "Invalid choice", "Parsing error", "Required"))
        ),
        "bad arguments",
    )
    usage = next((r for r in rows if r.startswith("--") and r != message), None)
    return f"{message} (expected: {usage})" if usage else message


def reproduce_config(argv: list[str]) -> ReproduceConfig:
    """The preset named by --preset and --task, overridden by every other flag, and checked."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="default")
    first.add_argument("--task", default="chitchat")
    known, _ = first.parse_known_args(argv)
    names = sorted({name for name, _ in PRESETS})
    if known.preset not in names:
        fail(f"reproduce: error: --preset: no preset {known.preset!r}; choose one of {names}")
    if known.task not in TASKS:
        fail(f"reproduce: error: --task: no task {known.task!r}; choose one of {list(TASKS)}")
    argv = [part for arg in argv for part in split_commas(arg)]
    cfg = parse(ReproduceConfig, argv, "reproduce", default=preset(known.preset, known.task))
    try:
        check_config(cfg)
    except ConfigError as error:
        fail(f"reproduce: error: {error}")
    return cfg


def split_commas(arg: str) -> list[str]:
    """`nll,a_lol` as `nll a_lol`: lists may be written either way."""
    return arg.split(",") if "," in arg and not arg.startswith("-") else [arg]


def cmd_train_ref(cfg: TrainRefConfig) -> None:
    model_cfg = ReproduceConfig(model=cfg.model).model_config()
    task = load_task(cfg.task, data_cfg=cfg.data)
    print(f"{cfg.task}: {task.report}")
    model, tokenizer, folder = reference_policy(
        task.data, model_cfg, cfg.sft, task=cfg.task, progress=cfg.progress
    )
    metrics = reference_metrics(folder)
    print(f"pi_ref saved in {folder}")
    print(
        f"validation reply perplexity: {metrics['val_reply_ppl']:.1f} ({metrics['steps']} steps, "
        f"{metrics['examples_seen']:,} pairs seen, {metrics['train_seconds']:.0f} s)"
    )
    prompts = task.data["test"]["prompt"][: cfg.samples]
    decode = DecodeConfig()
    replies = generate_responses(model, tokenizer, prompts, decode, model_cfg.max_prompt_tokens)
    print(f"sampled replies (top-p {decode.top_p}, seed {decode.seed}) to test prompts:")
    for prompt, reply in zip(prompts, replies):
        print(f"  > {prompt[-100:]!r}\n    pi_ref: {reply!r}")


def cmd_plot(cfg: PlotConfig) -> None:
    results, figures = Path(cfg.results), Path(cfg.figures)
    for task_dir in sorted(p for p in results.iterdir() if (p / "summary.csv").exists()):
        for path in plot_all(task_dir, figures, task_dir.name):
            print(f"wrote {path}")
    for task in TASKS:
        path = plot_noisy(results, figures, task)
        if path is not None:
            print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:10s} {text}" for name, text in COMMANDS.items())
        usage = (
            f"usage: python -m alol_min {{{','.join(COMMANDS)}}} [--help] [OPTIONS]\n\n{listing}"
        )
        if argv and argv[0] not in ("-h", "--help"):
            fail(f"{usage}\n\nerror: unknown command {argv[0]!r}")
        print(usage)
        if not argv:
            raise SystemExit(2)
        return
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        run(reproduce_config(rest))
    elif command == "train-ref":
        cmd_train_ref(parse(TrainRefConfig, rest, "train-ref"))
    else:
        cmd_plot(parse(PlotConfig, rest, "plot"))
