"""V_ref with borrowed replies (`values.NeighbourValue`) against the ridge, on a value_fit dump.

    python bench/value_fit.py --task chitchat --prompts 1000 --k 8 --extra-prompts 3000 --dump dump.npz
    python bench/value_neighbours.py dump.npz <pi_ref folder> --out results/measurements/chitchat_value_neighbours.json

value_fit's protocol (`cross_validated_r2`): 5 folds of the validation prompts, each held-out fold
predicted by a V fit on the other folds plus every extra training prompt; held-out R^2 against the
k-sample mean, and its share of the noise ceiling. The "neighbours" V pairs each prompt with r
replies pi_ref gave to each of its m nearest fit prompts (never a held-out prompt's replies) and
adds the reward's mean of those pairs to the ridge's features. For chitchat with the `tiny` pi_ref.
The share of the ceiling comes with a bootstrap interval over the validation prompts (R^2 and the
ceiling recomputed on each resample), alone and as the gain over the ridge fit with the same extras.
"""

import argparse
import json
import time

import numpy as np
from value_fit import cross_validated_r2, write_result

from alol_min.lm.batching import encode_prompts
from alol_min.lm.models import ModelConfig, load_policy
from alol_min.tasks import load_task
from alol_min.values import ValueConfig, noise_ceiling, prompt_states, r2_score


def bootstrap_share(prediction, samples, baseline=None, draws=1000, seed=0):
    """5%/95% bootstrap quantiles of R^2 / ceiling (and of its gain over `baseline`'s), resampling prompts."""
    rng, y = np.random.default_rng(seed), samples.mean(1)
    shares, gains = [], []
    for _ in range(draws):
        idx = rng.integers(0, len(y), len(y))
        ceiling = noise_ceiling(samples[idx])["ceiling_r2"]
        shares.append(r2_score(prediction[idx], y[idx]) / ceiling)
        if baseline is not None:
            gains.append(shares[-1] - r2_score(baseline[idx], y[idx]) / ceiling)
    out = {"share_90pct_interval": [round(float(q), 3) for q in np.percentile(shares, [5, 95])]}
    if baseline is not None:
        out["gain_over_ridge_90pct_interval"] = [
            round(float(q), 3) for q in np.percentile(gains, [5, 95])
        ]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dump")
    parser.add_argument("pi_ref")
    parser.add_argument(
        "--extras", default="0,3000", help="numbers of the dump's extra prompts to fit with"
    )
    parser.add_argument("--neighbours", default="8,32,64", help="values of m to try")
    parser.add_argument("--replies", type=int, default=4, help="r: replies per neighbour")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    dump = np.load(args.dump)
    prompts, extra = list(dump["prompts"]), list(dump["extra_prompts"])
    samples, extra_samples = dump["samples"], dump["extra_samples"]
    k = samples.shape[1]
    replies = dump["responses"].astype(object).reshape(len(prompts), k)
    extra_replies = (
        dump["extra_responses"].astype(object).reshape(len(extra), extra_samples.shape[1])
    )
    task = load_task("chitchat")
    reward = task.train_reward
    model, tokenizer = load_policy(args.pi_ref)
    max_prompt = ModelConfig.preset("tiny").max_prompt_tokens

    def states_of(texts):
        return prompt_states(
            model, encode_prompts(tokenizer, texts, max_prompt), tokenizer.pad_token_id
        )

    states, extra_states = states_of(prompts), states_of(extra)
    y, y_extra = samples.mean(1), extra_samples.mean(1)
    ceiling = noise_ceiling(samples)["ceiling_r2"]
    result = {
        "validation_prompts": len(prompts),
        "k": k,
        "ceiling": round(ceiling, 4),
        "replies_per_neighbour": args.replies,
        "fits": [],
    }
    configs = [("ridge", ValueConfig(estimator="ridge", samples_per_prompt=k))]
    configs += [
        (
            f"neighbours m={m}",
            ValueConfig(
                estimator="neighbours",
                samples_per_prompt=k,
                neighbours=m,
                replies_per_neighbour=args.replies,
            ),
        )
        for m in map(int, args.neighbours.split(","))
    ]
    for n in map(int, args.extras.split(",")):
        ridge_prediction = None
        for name, cfg in configs:
            start = time.time()
            r2, prediction = cross_validated_r2(
                states,
                y,
                reward.max_total,
                cfg,
                extra_states=extra_states[:n],
                extra_targets=y_extra[:n],
                texts=(prompts, replies),
                extra_texts=(extra[:n], extra_replies[:n]),
                reward=reward,
            )
            row = {
                "estimator": name,
                "extra_prompts": n,
                "cv_r2": round(r2, 4),
                "share_of_ceiling": round(r2 / ceiling, 3),
                "seconds": round(time.time() - start, 1),
            }
            row.update(bootstrap_share(prediction, samples, ridge_prediction))
            ridge_prediction = prediction if cfg.estimator == "ridge" else ridge_prediction
            result["fits"].append(row)
            print(json.dumps(row), flush=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
