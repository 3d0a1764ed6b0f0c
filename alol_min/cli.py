"""Command line: `python -m alol_min {reproduce,train-ref,plot,exercises} --help`.

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
from typing import Literal

import tyro

from alol_min.exercises.student import write_students
from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.lm.hub import HubUnavailableError
from alol_min.lm.reference import reference_metrics, reference_policy
from alol_min.lm.sft import SFTConfig
from alol_min.run.config import PRESETS, ConfigError, ReproduceConfig, check_config, preset
from alol_min.run.figure_index import write_index
from alol_min.run.plots import plot_all, plot_noisy
from alol_min.run.reproduce import run
from alol_min.tasks import TASKS, ChitchatConfig, load_data
from alol_min.tasks.base import DataError

COMMANDS = {
    "reproduce": "the main job: pi_ref, reward, V_ref, advantages, every method, test evaluation",
    "train-ref": "train (or reuse) the reference policy pi_ref by NLL, print its perplexity and samples",
    "plot": "rebuild figures/ and the tables from results/*/ logs",
    "exercises": "write the student notebooks (answers stubbed) from the solution notebooks",
}


EMBEDDED = ("chitchat", "tiny-hh")
"""The tasks whose data ships with the project (train-ref trains pi_ref on them)."""


@dataclass
class TrainRefConfig:
    """Train (or reuse, from the cache) pi_ref by NLL on a task's training responses."""

    task: Literal["chitchat", "tiny-hh"] = "chitchat"
    """The embedded task whose training replies pi_ref learns (its default budget is the task's)."""
    model: str = "tiny"
    """Model preset: micro, tiny, gpt2, smollm2-135m."""
    data: ChitchatConfig = field(default_factory=ChitchatConfig)
    """chitchat only: how its splits are built."""
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


def _join_docstring_lines() -> None:
    """tyro joins a docstring's lines into one paragraph only when they start with a letter; the
    configs' field docstrings have indented continuation lines, so strip that indent first."""
    original = tyro._strings.remove_single_line_breaks
    if getattr(original, "joins_indented", False):
        return

    def joined(text: str) -> str:
        return original("\n".join(line.strip() for line in text.split("\n")))

    joined.joins_indented = True
    tyro._strings.remove_single_line_breaks = joined


def fail(message: str) -> None:
    """One line on stderr and exit status 2, as argparse does; no traceback."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def parse(cls, argv: list[str], prog: str, default=None):
    """tyro.cli, with its error box turned into one line on stderr (exit status 2)."""
    _join_docstring_lines()
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
    """The message of tyro's error box (a title, then sections between rules) on one line, with
    the flag's usage when the box shows it."""
    sections: list[list[str]] = [[]]
    for row in box.splitlines():
        row = row.strip(" │╭╰╮╯")
        if row and set(row) <= set("-─ "):
            sections.append([])
        elif row:
            sections[-1].append(row)
    message = " ".join(sections[1] if len(sections) > 1 and sections[1] else sections[0])
    usage = next((r for part in sections[2:] for r in part if r.startswith("--")), None)
    message = re.sub(r"\s+", " ", message) or "bad arguments"
    return f"{message} (expected: {usage})" if usage else message


def split_lists(argv: list[str]) -> list[str]:
    """`--methods nll,a_lol` (or `--methods=nll,a_lol`) as `--methods nll a_lol`: the list flags
    may be written either way; nothing else is split."""
    out, in_list = [], False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if arg.startswith("-"):
            in_list = name in LIST_FLAGS
            if not (eq and in_list):
                out.append(arg)
                continue
            out.append(name)
            arg = value
        if in_list and "," in arg:
            out.extend(part.strip() for part in arg.split(",") if part.strip())
        else:
            out.append(arg)
    return out


LIST_FLAGS = ("--methods", "--seeds")


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
    argv = split_lists(argv)
    cfg = parse(ReproduceConfig, argv, "reproduce", default=preset(known.preset, known.task))
    try:
        check_config(cfg)
    except ConfigError as error:
        fail(f"reproduce: error: {error}")
    return cfg


def train_ref_config(argv: list[str]) -> TrainRefConfig:
    """TrainRefConfig with the task's own pi_ref budget as the default, overridden by the flags."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task", default="chitchat")
    task = first.parse_known_args(argv)[0].task
    if task not in EMBEDDED:
        fail(f"train-ref: error: --task: invalid choice {task!r}; choose one of {list(EMBEDDED)}")
    default = TrainRefConfig(task=task, sft=preset("default", task).sft)
    cfg = parse(TrainRefConfig, argv, "train-ref", default=default)
    if cfg.task != "chitchat" and cfg.data != ChitchatConfig():
        fail(
            f"train-ref: error: --data.*: chitchat's split options do not apply to --task {cfg.task}"
        )
    return cfg


def cmd_train_ref(cfg: TrainRefConfig) -> None:
    model_cfg = ReproduceConfig(model=cfg.model).model_config()
    data, report = load_data(cfg.task, data_cfg=cfg.data)
    print(f"{cfg.task}: {report}")
    model, tokenizer, folder = reference_policy(
        data, model_cfg, cfg.sft, task=cfg.task, progress=cfg.progress
    )
    metrics = reference_metrics(folder)
    print(f"pi_ref saved in {folder}")
    print(
        f"validation reply perplexity: {metrics['val_reply_ppl']:.1f} ({metrics['steps']} steps, "
        f"{metrics['examples_seen']:,} pairs seen, {metrics['train_seconds']:.0f} s)"
    )
    prompts = data["test"]["prompt"][: cfg.samples]
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
    print(f"wrote {write_index(figures)}")


@dataclass
class ExercisesConfig:
    """Write notebooks/student/*.ipynb from the solution notebooks, every marked answer stubbed."""

    notebooks: str = "notebooks"
    """The folder of the solution notebooks."""
    check: bool = False
    """Write nothing; exit 1 if a committed student notebook differs from its solution's."""


def cmd_exercises(cfg: ExercisesConfig) -> None:
    try:
        stale = write_students(Path(cfg.notebooks), check=cfg.check)
    except (FileNotFoundError, ValueError) as error:
        fail(f"exercises: error: {error}")
    for path in stale:
        print(f"{'stale' if cfg.check else 'wrote'} {path}")
    if cfg.check and stale:
        print("run `python -m alol_min exercises` to regenerate them", file=sys.stderr)
        sys.exit(1)
    if not stale:
        print("student notebooks are up to date")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:10s} {text}" for name, text in COMMANDS.items())
        usage = (
            f"usage: python -m alol_min {{{','.join(COMMANDS)}}} [--help] [OPTIONS]\n\n{listing}"
        )
        if argv and argv[0] not in ("-h", "--help"):
            fail(f"{usage}\n\nerror: unknown command {argv[0]!r}")
        if not argv:
            fail(usage)
        print(usage)
        return
    command, rest = argv[0], argv[1:]
    if command == "reproduce":
        cfg = reproduce_config(rest)
        try:
            run(cfg)
        except (
            DataError,
            HubUnavailableError,
            FileNotFoundError,
        ) as error:  # the data, in one line
            fail(f"reproduce: error: {error}")
    elif command == "train-ref":
        cmd_train_ref(train_ref_config(rest))
    elif command == "exercises":
        cmd_exercises(parse(ExercisesConfig, rest, "exercises"))
    else:
        cmd_plot(parse(PlotConfig, rest, "plot"))
