"""Measure the core numbers on an embedded task: V_ref's fit against its noise ceiling, advantages.

    python bench/value_fit.py --task chitchat --model tiny --prompts 1000 --k 8 --extra-prompts 3000

Steps: pi_ref (cached) samples k replies for each of `--prompts` validation prompts; the reward
scores them; V_ref is fit by 5-fold cross-validation (every validation prompt is held out once) and
the pooled held-out R^2 against the k-sample mean is compared with the noise ceiling of that target
(also for the first 4 samples, k=4), for both estimators (ridge, the paper's attention head).
`--extra-prompts N` adds pi_ref's samples on the first N training prompts to every fold's fitting
set (ridge only); the held-out prompts are always validation prompts. Then V (fit on all prompts)
and pi_ref's log-probs are computed for `--offline` training pairs, and the leftover fraction and
corr(A, R) are reported.
Prints a JSON summary; `--out` writes it to a file.
"""

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from alol_min.extensions.neighbour_value import fit_neighbour_value
from alol_min.lm.batching import encode_prompts
from alol_min.lm.generation import DecodeConfig
from alol_min.lm.models import ModelConfig
from alol_min.lm.reference import encode_split, reference_metrics, reference_policy
from alol_min.run.config import preset
from alol_min.run.prepare import advantage_summary, reference_pass, sample_rewards
from alol_min.tasks import load_task
from alol_min.values import ValueConfig, fit_value, noise_ceiling, prompt_states, r2_score


def cross_validated_r2(
    states,
    targets,
    max_value,
    cfg,
    folds=5,
    extra_states=(),
    extra_targets=(),
    texts=None,
    extra_texts=None,
    reward=None,
):
    """Pooled held-out R^2: each prompt predicted by a V that never saw it (extras are always fit on).

    `texts` / `extra_texts`: (prompts, replies [N, k]) and `reward`, which the "neighbours" estimator reads.
    """
    order = np.random.default_rng(cfg.seed).permutation(len(states))
    prediction = np.zeros(len(states))
    all_states = list(states) + list(extra_states)
    all_targets = np.concatenate([targets, np.asarray(extra_targets, float)])
    prompts = replies = None
    if texts is not None:
        more = extra_texts or ([], np.zeros((0, np.shape(texts[1])[1]), dtype=object))
        prompts = list(texts[0]) + list(more[0])
        replies = np.concatenate(
            [np.asarray(texts[1], dtype=object), np.asarray(more[1], dtype=object)]
        )
    for fold in range(folds):
        held = order[fold::folds].tolist()
        if cfg.estimator == "neighbours":
            head, _ = fit_neighbour_value(
                all_states,
                all_targets,
                max_value,
                cfg,
                heldout=held,
                prompts=prompts,
                replies=replies,
                reward=reward,
            )
        else:
            head, _ = fit_value(all_states, all_targets, max_value, cfg, heldout=held)
        prediction[held] = head.predict(
            [states[i] for i in held], [prompts[i] for i in held] if prompts else None
        )
    return r2_score(prediction, targets), prediction


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="chitchat")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--extra-prompts", type=int, default=0)
    parser.add_argument("--offline", type=int, default=20000)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--dump", default=None, help="save the prompts and sampled rewards (.npz) for offline study"
    )
    parser.add_argument(
        "--sft-steps", type=int, default=None, help="pi_ref NLL steps (default: the task's)"
    )
    parser.add_argument("--sft-batch-size", type=int, default=None)
    parser.add_argument("--sft-lr", type=float, default=None)
    args = parser.parse_args()

    cfg = replace(preset("default", args.task), model=args.model)
    if args.sft_steps is not None:  # a short fine-tune, for pretrained models on the CPU
        cfg.sft = replace(
            cfg.sft,
            steps=args.sft_steps,
            eval_every=args.sft_steps,
            eval_pairs=200,
            warmup_steps=max(1, args.sft_steps // 10),
        )
    for name, value in (("batch_size", args.sft_batch_size), ("lr", args.sft_lr)):
        if value is not None:
            cfg.sft = replace(cfg.sft, **{name: value})
    task = load_task(args.task)
    data, reward, reward_stats = task.data, task.train_reward, task.reward_stats
    model_cfg = ModelConfig.preset(args.model)
    model, tokenizer, folder = reference_policy(data, model_cfg, cfg.sft, task=args.task)
    prompts = data["validation"]["prompt"][: args.prompts]
    start = time.time()
    samples, responses = sample_rewards(
        model, tokenizer, prompts, reward, args.k, DecodeConfig(), model_cfg.max_prompt_tokens
    )
    result = {
        "task": args.task,
        "model": args.model,
        "prompts": len(prompts),
        "k": args.k,
        "pi_ref": {
            "sft_steps": cfg.sft.steps,
            "sft_batch_size": cfg.sft.batch_size,
            "sft_lr": cfg.sft.lr,
            **reference_metrics(folder),
        },
        "sample_seconds": round(time.time() - start, 1),
        "reward_fit": reward_stats,
        "reward_mean": float(samples.mean()),
        "reward_sd": float(samples.std()),
    }

    def states_of(texts):
        return prompt_states(
            model,
            encode_prompts(tokenizer, texts, model_cfg.max_prompt_tokens),
            tokenizer.pad_token_id,
        )

    states = states_of(prompts)
    extra_states, extra_samples, extra_responses = [], np.zeros((0, args.k)), []
    if args.extra_prompts:
        extra = data["train"]["prompt"][: args.extra_prompts]
        start = time.time()
        extra_samples, extra_responses = sample_rewards(
            model, tokenizer, extra, reward, args.k, DecodeConfig(), model_cfg.max_prompt_tokens
        )
        result["extra_prompts"] = {"n": len(extra), "sample_seconds": round(time.time() - start, 1)}
        extra_states = states_of(extra)
    if args.dump:
        np.savez_compressed(
            args.dump,
            prompts=np.array(prompts),
            samples=samples,
            responses=np.array(responses),
            extra_prompts=np.array(data["train"]["prompt"][: args.extra_prompts]),
            extra_samples=extra_samples,
            extra_responses=np.array(extra_responses),
        )
    for estimator in ("ridge", "attention"):
        value_cfg = ValueConfig(samples_per_prompt=args.k, estimator=estimator)
        for k in sorted({4, args.k}):
            targets = samples[:, :k].mean(axis=1)
            ceiling = noise_ceiling(samples[:, :k])
            runs = {"": ((), ())}
            if args.extra_prompts and estimator == "ridge":
                runs["_extra"] = (extra_states, extra_samples[:, :k].mean(axis=1))
            for suffix, (more_states, more_targets) in runs.items():
                start = time.time()
                r2, _ = cross_validated_r2(
                    states,
                    targets,
                    reward.max_total,
                    value_cfg,
                    extra_states=more_states,
                    extra_targets=more_targets,
                )
                key = f"{estimator}_k{k}{suffix}"
                result[key] = {
                    "cv_r2": round(r2, 4),
                    "ceiling_r2": round(ceiling["ceiling_r2"], 4),
                    "between_share": round(ceiling["between_share"], 4),
                    "share_of_ceiling": round(r2 / ceiling["ceiling_r2"], 3)
                    if ceiling["ceiling_r2"] > 0
                    else None,
                    "fit_prompts": int(round(len(states) * 0.8)) + len(more_states),
                    "fit_seconds": round(time.time() - start, 1),
                }
                print(json.dumps({key: result[key]}))
    all_states = states + list(extra_states)
    all_targets = np.concatenate([samples.mean(axis=1), extra_samples.mean(axis=1)])
    head, _ = fit_value(
        all_states,
        all_targets,
        reward.max_total,
        ValueConfig(samples_per_prompt=args.k),
        heldout=[],
    )
    pool = task.offline_pool
    train = pool.select(range(min(args.offline, len(pool))))
    encoded = encode_split(tokenizer, train, model_cfg)
    start = time.time()
    passed = reference_pass(model, encoded, tokenizer.pad_token_id, head=head)
    result["reference_pass_seconds"] = round(time.time() - start, 1)
    rewards = task.offline_rewards(train)
    summary = advantage_summary(rewards["total"], passed["value"])
    result["advantage"] = {k: round(v, 4) for k, v in summary.items() if k != "advantage"}
    if "is_noisy" in train.column_names:  # tiny-hh: does A <= 0 find the label-noise pairs?
        noisy = np.array(train["is_noisy"], bool)
        negative = summary["advantage"] <= 0
        result["advantage"]["negative_share_noisy_pairs"] = round(float(negative[noisy].mean()), 4)
        result["advantage"]["negative_share_clean_pairs"] = round(float(negative[~noisy].mean()), 4)
        family = np.array(train["family"])
        result["value_by_family"] = {
            f: round(float(passed["value"][family == f].mean()), 4) for f in set(family)
        }
    result["offline_reward_mean"] = {k: round(float(v.mean()), 4) for k, v in rewards.items()}
    write_result(result, args.out)


def write_result(result: dict, out: str | None) -> None:
    """Print the JSON summary and, with `--out`, write it to that file."""
    print(json.dumps(result, indent=1))
    if out:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
