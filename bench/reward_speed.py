"""Benchmark of the embedded chitchat reward: build time, held-out relevance AUC, scoring speed.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python bench/reward_speed.py [--out runs/reward_bench]

Prints one line per measurement and writes them to <out>/reward_bench.json. Takes about 3-4 minutes
on 2 CPU cores (most of it training the relevance model and its two cross-fitting models).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from alol_min.tasks.chitchat import ChitchatConfig, load_chitchat
from alol_min.tasks.chitchat_reward import ChitchatReward, cross_fit_rewards
from alol_min.tasks.relevance import evaluate_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="runs/reward_bench", help="folder for the reward and the results"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    results = {"machine": platform.processor() or platform.machine(), "seed": args.seed}

    def log(key, value):
        results[key] = value
        print(f"{key}: {value}", flush=True)

    data, report = load_chitchat(ChitchatConfig())
    print(f"chitchat: {report}")
    train, val, test = data["train"], data["validation"], data["test"]

    start = time.perf_counter()
    reward, stats = ChitchatReward.build(train, validation=val, seed=args.seed)
    log("build_seconds", round(time.perf_counter() - start, 1))
    log("build_stats", stats)
    log(
        "relevance_auc_test",
        round(
            evaluate_auc(
                reward.relevance,
                test["prompt"],
                test["response"],
                test["conversation_id"],
                seed=args.seed,
            ),
            4,
        ),
    )

    reward.save(out / "reward")
    log(
        "saved_mb",
        round(sum(f.stat().st_size for f in (out / "reward").rglob("*") if f.is_file()) / 2**20, 1),
    )
    reward = ChitchatReward.load(out / "reward")

    prompts, responses = list(val["prompt"][:1000]), list(val["response"][:1000])
    reward(prompts[:10], responses[:10])  # warm-up: lexicons load once
    times = []
    for _ in range(3):
        start = time.perf_counter()
        scores = reward(prompts, responses)
        times.append(time.perf_counter() - start)
    log("score_1000_pairs_seconds", round(min(times), 3))
    log("human_validation_means", {k: round(float(v.mean()), 3) for k, v in scores.items()})
    shuffled = reward(prompts, responses[1:] + responses[:1])
    log("shuffled_validation_means", {k: round(float(v.mean()), 3) for k, v in shuffled.items()})

    # Rewards of training pairs: fitted on them (inflated) vs cross-fitted (honest).
    subset = train.select(np.random.default_rng(0).choice(len(train), 5000, replace=False).tolist())
    fitted = reward(list(subset["prompt"]), list(subset["response"]))
    honest = cross_fit_rewards(reward, subset)
    in_sample_auc = evaluate_auc(
        reward.relevance,
        subset["prompt"],
        subset["response"],
        subset["conversation_id"],
        seed=args.seed,
    )
    log("relevance_auc_train_subset_in_sample", round(in_sample_auc, 4))
    log("train_subset_means_in_sample", {k: round(float(v.mean()), 3) for k, v in fitted.items()})
    log("train_subset_means_cross_fit", {k: round(float(v.mean()), 3) for k, v in honest.items()})

    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_bench.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
