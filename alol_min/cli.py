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
                               figures_dir=args.figures, pool=args.pool)
    run(cfg, progress=not args.no_progress)


def _main_process() -> bool:
    """False on the non-main processes of `accelerate launch` / torchrun: they train, never write results."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _hh_reference(args, data, model_cfg):
    """(pi_ref, tokenizer, cache-key folder): NLL on the chosen responses (cached), or the model as-is
    with --no-sft (already a reference policy, e.g. an SFT / instruct model or a saved pi_ref)."""
    from pathlib import Path

    from .cache import cache_key
    from .models import make_policy
    from .reference import reference_metrics, reference_policy
    from .training import SFTConfig

    if args.no_sft:
        if not model_cfg.pretrained:
            raise SystemExit(f"--no-sft needs a pretrained model, but {args.model!r} is built from config")
        model, tokenizer = make_policy(model_cfg)
        model.eval()
        where = Path(model_cfg.pretrained).resolve() if Path(model_cfg.pretrained).exists() else model_cfg.pretrained
        return model, tokenizer, Path(cache_key({"pi_ref": str(where)}))
    sft = SFTConfig(seed=args.seed, bf16=args.bf16, grad_checkpointing=args.grad_checkpointing)
    for field, value in (("steps", args.sft_steps), ("batch_size", args.sft_batch_size), ("lr", args.sft_lr)):
        if value is not None:
            setattr(sft, field, value)
    sft.eval_every = min(sft.eval_every, sft.steps)
    sft.warmup_steps = min(sft.warmup_steps, sft.steps)
    model, tokenizer, folder = reference_policy(data, model_cfg, sft, task="hh", progress=not args.no_progress)
    print(f"pi_ref: validation reply perplexity {reference_metrics(folder)['val_reply_ppl']:.1f}")
    return model, tokenizer, folder


def _hh_task(args, data, report):
    """The HH Task: with --reward-model, that sequence classifier (OpenAssistant format by default) on
    the whole training split; without, a Bradley-Terry reward model trained (cached) on half of the
    training pairs, the offline RL set being the other half (as tiny-hh)."""
    import json
    from pathlib import Path

    from .cache import dataset_digest, load_or_build
    from .preference import PreferenceReward, pairwise_accuracy, train_preference_model
    from .rewards import SequenceClassifierReward
    from .tasks import Task

    train = data["train"]
    if args.reward_model:
        formatter = "oasst" if args.reward_format == "oasst" else None

        def classifier(name):
            return SequenceClassifierReward(name, name="reward", formatter=formatter, max_length=args.reward_max_tokens)

        reward = classifier(args.reward_model)
        test_reward = classifier(args.test_reward_model) if args.test_reward_model else reward
        stats = {"reward_model": args.reward_model, "test_reward_model": args.test_reward_model,
                 "format": args.reward_format, "max_tokens": args.reward_max_tokens}
        return Task("hh", data, report, reward, test_reward, stats, train)
    half = len(train) // 2
    rm_pairs, pool = train.select(range(half)), train.select(range(half, len(train)))
    inputs = {"task": "hh", "train": dataset_digest(rm_pairs, ("prompt", "chosen", "rejected")),
              "seed": args.seed, "steps": args.rm_steps}

    def build(folder: Path) -> None:
        model, tokenizer, stats = train_preference_model(rm_pairs, seed=args.seed, steps=args.rm_steps,
                                                         warmup_steps=max(1, min(25, args.rm_steps // 10)))
        reward = PreferenceReward(model, tokenizer)
        reward.save(folder)
        val = data["validation"]
        stats = {k: v for k, v in stats.items() if not isinstance(v, list)}
        stats["heldout_pairwise_accuracy"] = pairwise_accuracy(reward, val["prompt"], val["chosen"], val["rejected"])
        (folder / "stats.json").write_text(json.dumps(stats, indent=1, default=float))

    folder = load_or_build("reward-hh", inputs, build)
    reward = PreferenceReward.load(folder)
    stats = json.loads((folder / "stats.json").read_text())
    print(f"reward: Bradley-Terry on {half:,} pairs, held-out pairwise accuracy "
          f"{stats['heldout_pairwise_accuracy']:.3f}")
    return Task("hh", data, report, reward, reward, stats, pool)


def cmd_hh(args) -> None:
    """The paper's HHA pipeline on HH-RLHF: pi_ref -> reward -> V -> advantages -> methods -> test."""
    import json
    from pathlib import Path

    from .evaluation import evaluate_policy
    from .generation import DecodeConfig
    from .hh import load_hh_splits
    from .losses import METHODS
    from .models import ModelConfig
    from .offline import OfflineConfig, train_offline
    from .reproduce import ReproduceConfig, prepare_offline, with_finished_runs, write_summary
    from .values import ValueConfig

    methods = args.method.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    data, report = load_hh_splits(args.source, n_validation=args.n_val, n_test=args.n_test, max_rows=args.max_rows,
                                  seed=args.seed, verbose=True)
    model_cfg = ModelConfig.for_model(args.model, max_prompt_tokens=args.max_prompt_tokens,
                                      max_response_tokens=args.max_response_tokens)
    model, tokenizer, ref_folder = _hh_reference(args, data, model_cfg)
    task = _hh_task(args, data, report)
    new_tokens = args.max_new_tokens or model_cfg.max_response_tokens
    greedy = DecodeConfig(max_new_tokens=new_tokens, do_sample=False)  # the paper's validation and test decoding
    cfg = ReproduceConfig(task="hh", model=model_cfg.name, methods=tuple(methods), n_offline=args.n_offline,
                          n_value_prompts=args.value_prompts,
                          n_val_eval=args.n_val_eval, n_test=args.n_test, out_dir=args.out,
                          value=ValueConfig(estimator=args.value_estimator, samples_per_prompt=args.value_samples,
                                            epochs=args.value_epochs, seed=args.seed),
                          decode=DecodeConfig(max_new_tokens=new_tokens))  # pi_ref's samples for V: top-p 0.9
    # --prepare-only also builds what DPO / PRO need, so no later (multi-process) call has to
    offline, prep, _, _ = prepare_offline(cfg, task, model, tokenizer, model_cfg, ref_folder,
                                          rejected=True if args.prepare_only else None)
    v, a = prep["value"], prep["advantage"]
    print(f"V_ref: held-out R^2 {v.get('heldout_r2', float('nan')):.3f}; leftover fraction "
          f"{a['leftover_fraction']:.3f}; {len(offline.encoded):,} offline pairs")
    if args.prepare_only:
        print("--prepare-only: pi_ref, reward, V and advantages are cached; stopping before training")
        return
    out = Path(args.out) / "hh"
    val_prompts = data["validation"]["prompt"][-cfg.n_val_eval:]
    test_prompts = data["test"]["prompt"][:cfg.n_test]

    def validate(policy):
        scores, _ = evaluate_policy(policy, tokenizer, val_prompts, task.train_reward, greedy, model_cfg.max_prompt_tokens)
        return {k: round(v, 4) for k, v in scores.items()}

    ref_scores, _ = evaluate_policy(model, tokenizer, test_prompts, task.test_reward, greedy, model_cfg.max_prompt_tokens)
    rows = [{"method": "pi_ref", "seed": "", "steps": 0, "examples_seen": 0, **ref_scores}]
    for method in methods:
        run_dir = out / "runs" / f"{method}-s{args.seed}"
        offline_cfg = OfflineConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                                    lr=args.lr, warmup_steps=args.warmup, grad_clip=args.grad_clip,
                                    eval_every=args.eval_every, seed=args.seed, bf16=args.bf16,
                                    grad_checkpointing=args.grad_checkpointing)
        policy, log = train_offline(model, method, offline, offline_cfg, tokenizer.pad_token_id,
                                    validate=validate if cfg.n_val_eval > 0 else None, run_dir=run_dir,
                                    progress=not args.no_progress)
        scores, responses = evaluate_policy(policy, tokenizer, test_prompts, task.test_reward, greedy,
                                            model_cfg.max_prompt_tokens)
        rows.append({"method": method, "seed": args.seed, "steps": log[-1]["step"],
                     "examples_seen": log[-1]["examples_seen"], **scores})
        print(f"{METHODS[method].label}: test reward {scores['total']:.4f} (pi_ref {ref_scores['total']:.4f})")
        if _main_process():
            (run_dir / "samples.json").write_text(json.dumps(
                [{"prompt": p, "response": r} for p, r in zip(test_prompts[:20], responses[:20])], indent=1))
            (run_dir / "test.json").write_text(json.dumps(rows[-1]))
    if _main_process():
        write_summary(with_finished_runs(rows, out), out / "summary.csv")  # earlier --method runs kept
        (out / "prepare.json").write_text(json.dumps({"reward": task.reward_stats, **prep}, indent=1, default=float))
        print(f"results in {out}")


def cmd_plot(args) -> None:
    """Rebuild every figure and table from the logged results."""
    from pathlib import Path

    from .plots import plot_all, plot_noisy
    from .tasks import TASKS

    for task_dir in sorted(p for p in Path(args.results).iterdir() if (p / "summary.csv").exists()):
        for path in plot_all(task_dir, Path(args.figures), task_dir.name):
            print(f"wrote {path}")
    for task in TASKS:
        path = plot_noisy(Path(args.results), Path(args.figures), task)
        if path is not None:
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
    reproduce.add_argument("--pool", default=None, choices=["all", "low-rated", "high-rated"],
                           help="offline training pairs: all (default), or only low- / high-rated ones (chitchat: "
                                "by the conversations' ratings; tiny-hh: label-noise / clean pairs), the noisy-data "
                                "experiment; results go to results/<task>-<pool>")
    reproduce.add_argument("--out", default="results", help="results folder")
    reproduce.add_argument("--figures", default="figures", help="figures folder")
    reproduce.add_argument("--no-progress", action="store_true", help="hide progress bars")
    reproduce.set_defaults(func=cmd_reproduce)
    _add_hh_parser(sub)
    plot = sub.add_parser("plot", help="rebuild figures and tables from results/*/ logs")
    plot.add_argument("--results", default="results", help="results folder")
    plot.add_argument("--figures", default="figures", help="figures folder")
    plot.set_defaults(func=cmd_plot)
    return parser


def _add_hh_parser(sub) -> None:
    """`hh`: defaults are the paper's HHA settings (spec 6.1, 7) except the model and the reward."""
    hh = sub.add_parser("hh", help="the paper's HHA pipeline on HH-RLHF data (hub name, .jsonl[.gz] file or folder)")
    add = hh.add_argument
    add("--source", required=True, help="Anthropic/hh-rlhf, a folder of {train,test}.jsonl[.gz] (or subsets), or a file")
    add("--model", default="tiny", help="preset (micro, tiny, gpt2, smollm2-135m) or a pretrained folder / hub name")
    add("--method", default="a_lol", help="comma-separated methods (keys of losses.METHODS)")
    add("--seed", type=int, default=0, help="seed of the splits, pi_ref, reward model, V and training")
    add("--no-sft", action="store_true", help="the model is already a reference policy: skip pi_ref's NLL training")
    add("--reward-model", default=None, help="sequence-classifier reward (folder or hub name); default: "
        "a Bradley-Terry model trained on half of the pairs")
    add("--reward-format", default="oasst", choices=["oasst", "plain"],
        help="reward model input: OpenAssistant <|prompter|>/<|assistant|> turns, or prompt <eos> response")
    add("--reward-max-tokens", type=int, default=1024, help="reward input is left-truncated to this many tokens")
    add("--test-reward-model", default=None, help="a different reward model for the test split (the paper: 6.9B OA RM)")
    add("--rm-steps", type=int, default=250, help="Bradley-Terry reward model steps (without --reward-model)")
    add("--max-rows", type=int, default=None, help="read at most this many rows per file")
    add("--n-val", type=int, default=280, help="validation prompts held out of train (the paper: 280)")
    add("--n-test", type=int, default=500, help="test prompts evaluated")
    add("--n-offline", type=int, default=10**9, help="cap on offline RL pairs (default: all)")
    add("--value-prompts", type=int, default=280, help="validation prompts whose pi_ref samples fit V")
    add("--value-samples", type=int, default=4, help="pi_ref samples per prompt for V (the paper: 1)")
    add("--value-epochs", type=int, default=40, help="epochs of the value head fit (attention)")
    add("--value-estimator", default="ridge", choices=["ridge", "attention", "neighbours"],
        help="V_ref: ridge on pi_ref's pooled prompt states (default), the paper's attention head, or the ridge "
             "plus the reward of x with pi_ref's replies to the nearest value prompts (values.NeighbourValue)")
    add("--sft-steps", type=int, default=None, help="pi_ref NLL steps (default: SFTConfig)")
    add("--sft-batch-size", type=int, default=None, help="pi_ref NLL pairs per micro-batch")
    add("--sft-lr", type=float, default=None, help="pi_ref NLL peak learning rate")
    add("--steps", type=int, default=9000, help="optimiser steps (A-LoL variants: int(steps x leftover fraction))")
    add("--batch-size", type=int, default=4, help="examples per micro-batch and process (the paper: 4)")
    add("--grad-accum", type=int, default=4, help="micro-batches per optimiser step (the paper: 4)")
    add("--lr", type=float, default=2e-4, help="learning rate (the paper: 2e-4, constant)")
    add("--warmup", type=int, default=0, help="linear warm-up steps (the paper: none in effect)")
    add("--grad-clip", type=float, default=0.3, help="max gradient norm (the paper: 0.3)")
    add("--eval-every", type=int, default=900, help="validation every this many steps (the paper: 900)")
    add("--n-val-eval", type=int, default=280, help="validation prompts decoded at each validation "
        "(0: no validation, the last step is kept)")
    add("--max-new-tokens", type=int, default=None, help="decoding length (default: the model's max_response_tokens)")
    add("--max-prompt-tokens", type=int, default=None, help="override the model's prompt length (the paper: 640)")
    add("--max-response-tokens", type=int, default=None, help="override the response length (the paper: 128)")
    add("--bf16", action="store_true", help="bf16 mixed precision (GPUs)")
    add("--grad-checkpointing", action="store_true", help="recompute activations: less memory, more compute")
    add("--prepare-only", action="store_true", help="stop after pi_ref, reward, V and advantages (cached); "
        "run this once before `accelerate launch`")
    add("--out", default="results", help="results folder (results/hh/...)")
    add("--no-progress", action="store_true", help="hide progress bars")
    hh.set_defaults(func=cmd_hh)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
