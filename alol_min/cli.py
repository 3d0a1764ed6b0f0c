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
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
