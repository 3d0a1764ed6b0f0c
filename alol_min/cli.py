"""Command line: `python -m alol_min --help`."""
from __future__ import annotations

import argparse
import sys


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="chitchat", choices=["chitchat"], help="embedded task (default chitchat)")
    parser.add_argument("--model", default="tiny", help="model preset: micro, tiny, gpt2, smollm2-135m")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split, init and batch order")
    parser.add_argument("--max-train", type=int, default=None, help="cap on training pairs (default all)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def sft_config_from_args(args):
    from .training import SFTConfig

    cfg = SFTConfig(seed=args.seed)
    for name in ("steps", "batch_size", "lr"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    cfg.eval_every = min(cfg.eval_every, cfg.steps)
    return cfg


def cmd_train_ref(args) -> None:
    """Train (or reuse) pi_ref, print its validation reply perplexity and sampled replies."""
    from .data import ChitchatConfig, load_chitchat
    from .generation import DecodeConfig, generate_responses
    from .models import ModelConfig
    from .reference import reference_metrics, reference_policy

    data, report = load_chitchat(ChitchatConfig(seed=args.seed, max_train=args.max_train))
    print(f"{args.task}: {report}")
    model_cfg = ModelConfig.preset(args.model)
    model, tokenizer, folder = reference_policy(data, model_cfg, sft_config_from_args(args), task=args.task,
                                                progress=not args.no_progress)
    metrics = reference_metrics(folder)
    print(f"pi_ref saved in {folder}")
    print(f"validation reply perplexity: {metrics['val_reply_ppl']:.1f} "
          f"({metrics['steps']} steps, {metrics['examples_seen']:,} pairs seen, {metrics['train_seconds']:.0f} s)")
    prompts = data["test"]["prompt"][:args.samples]
    replies = generate_responses(model, tokenizer, prompts, DecodeConfig(), model_cfg.max_prompt_tokens)
    print("sampled replies (top-p 0.9, seed 1234) to test prompts:")
    for prompt, reply in zip(prompts, replies):
        print(f"  > {prompt[-100:]!r}\n    pi_ref: {reply!r}")


def cmd_reproduce(args) -> None:
    """Run the embedded reproduction (pi_ref -> reward -> V -> advantages -> methods -> test)."""
    from .reproduce import ReproduceConfig, run

    mode = "smoke" if args.smoke else "full" if args.full else "default"
    methods = tuple(args.methods.split(",")) if args.methods else None
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    cfg = ReproduceConfig.mode(mode, task=args.task, methods=methods, seeds=seeds, out_dir=args.out,
                               figures_dir=args.figures)
    run(cfg, progress=not args.no_progress)


def cmd_plot(args) -> None:
    """Rebuild every figure and table from the logged results."""
    from pathlib import Path

    from .plots import plot_all

    for task_dir in sorted(p for p in Path(args.results).iterdir() if (p / "summary.csv").exists()):
        for path in plot_all(task_dir, Path(args.figures), task_dir.name):
            print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alol_min",
                                     description="A-LoL: advantage-leftover lunch offline RL for language models")
    sub = parser.add_subparsers(dest="command", required=True)
    train_ref = sub.add_parser("train-ref", help="train the reference policy pi_ref by NLL (cached)")
    _add_model_args(train_ref)
    train_ref.add_argument("--steps", type=int, default=None, help="optimiser steps (default: SFTConfig)")
    train_ref.add_argument("--batch-size", type=int, default=None, help="pairs per step")
    train_ref.add_argument("--lr", type=float, default=None, help="peak learning rate")
    train_ref.add_argument("--samples", type=int, default=5, help="sampled replies to print")
    train_ref.set_defaults(func=cmd_train_ref)
    reproduce = sub.add_parser("reproduce", help="the main job: every stage of A-LoL and the baselines, end to end")
    reproduce.add_argument("--task", default="chitchat", choices=["chitchat", "tiny-hh"], help="embedded task")
    size = reproduce.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="exercise everything with tiny budgets (CI)")
    size.add_argument("--full", action="store_true", help="all methods x 3 seeds")
    reproduce.add_argument("--methods", default=None, help="comma-separated method names (default: the mode's)")
    reproduce.add_argument("--seeds", default=None, help="comma-separated seeds (default: the mode's)")
    reproduce.add_argument("--out", default="results", help="results folder")
    reproduce.add_argument("--figures", default="figures", help="figures folder")
    reproduce.add_argument("--no-progress", action="store_true", help="hide progress bars")
    reproduce.set_defaults(func=cmd_reproduce)
    plot = sub.add_parser("plot", help="rebuild figures and tables from results/*/ logs")
    plot.add_argument("--results", default="results", help="results folder")
    plot.add_argument("--figures", default="figures", help="figures folder")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
