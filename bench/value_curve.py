"""Is V_ref on chitchat short of data or of features? Its learning curve, a reward feature, two nonlinear fits.

    python bench/value_fit.py --task chitchat --prompts 1000 --k 8 --extra-prompts 3000 --dump dump.npz
    python bench/value_curve.py dump.npz <pi_ref folder> --more 6000 --more-k 4 \
        --out results/measurements/chitchat_value_curve.json

Starts from value_fit's dump (validation prompts with k samples each, the first training prompts
with k samples each), samples pi_ref on the next `--more` training prompts (`--more-k` samples each),
then fits with value_features' protocol (5 folds of the validation prompts, every extra prompt in
each fold's fit, ridge penalty by inner CV), for a growing number of extra prompts:
  states        ridge on the pooled pi_ref states (the library's estimator);
  states+bank   plus the relevance reward of the prompt against a fixed bank of pi_ref replies to
                other prompts (its mean probability, mean logit and logit quantiles 10/50/90%): what
                the reward's only prompt-dependent part makes of x with a typical pi_ref reply;
  +tfidf        plus 50 SVD dimensions of the prompt's TF-IDF (the relevance model's prompt tokens);
and, with every extra prompt, gradient boosting and a one-hidden-layer MLP on states+bank.
Prints held-out R^2 against the k-sample mean of the validation prompts and its share of the noise
ceiling. For chitchat with the `tiny` pi_ref.
"""

import argparse
import json
import time

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neural_network import MLPRegressor
from value_features import cross_validated, folds, prompt_features

from alol_min.lm.generation import DecodeConfig
from alol_min.lm.models import ModelConfig, load_policy
from alol_min.run.prepare import sample_rewards
from alol_min.tasks import load_task
from alol_min.tasks.relevance import relevance_prompt_tokens
from alol_min.values import noise_ceiling, r2_score


def bank_features(relevance, prompts, bank):
    """[N, 5]: mean P(relevant), mean logit, logit quantiles 10/50/90% of each prompt against the bank."""
    logit = relevance.logit([p for p in prompts for _ in bank], list(bank) * len(prompts)).reshape(
        len(prompts), len(bank)
    )
    return np.c_[
        (1 / (1 + np.exp(-logit))).mean(1),
        logit.mean(1),
        np.percentile(logit, [10, 50, 90], axis=1).T,
    ]


def nonlinear_r2(order, X, X_extra, y, y_extra, make):
    """value_features' protocol with a fixed model instead of the CV'd ridge (standardised inputs)."""
    prediction = np.zeros(len(y))
    for held, keep in folds(order):
        X_fit, y_fit = np.r_[X[keep], X_extra], np.r_[y[keep], y_extra]
        mean, scale = X_fit.mean(0), X_fit.std(0) + 1e-6
        prediction[held] = (
            make().fit((X_fit - mean) / scale, y_fit).predict((X[held] - mean) / scale)
        )
    return r2_score(prediction, y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dump")
    parser.add_argument("pi_ref")
    parser.add_argument(
        "--more", type=int, default=6000, help="training prompts sampled after the dump's extras"
    )
    parser.add_argument("--more-k", type=int, default=4)
    parser.add_argument("--bank", type=int, default=64, help="pi_ref replies in the relevance bank")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    dump = np.load(args.dump)
    prompts, extra = list(dump["prompts"]), list(dump["extra_prompts"])
    task = load_task("chitchat")
    reward = task.train_reward
    model, tokenizer = load_policy(args.pi_ref)
    max_prompt = ModelConfig.preset("tiny").max_prompt_tokens
    more = task.data["train"]["prompt"][len(extra) : len(extra) + args.more]
    start = time.time()
    more_samples = (
        sample_rewards(
            model, tokenizer, more, reward, args.more_k, DecodeConfig(), max_prompt, progress=True
        )[0]
        if more
        else np.zeros((0, args.more_k))
    )
    sample_seconds = round(time.time() - start, 1)

    def features(texts):
        return prompt_features(model, tokenizer, texts, max_prompt)

    samples = dump["samples"]
    y = samples.mean(1)
    y_extra = np.r_[dump["extra_samples"].mean(1), more_samples.mean(1)]
    ceiling = noise_ceiling(samples)["ceiling_r2"]
    F, F_extra = features(prompts), features(extra + more)
    bank = list(
        dump["extra_responses"][:: dump["extra_samples"].shape[1]][-args.bank :]
    )  # one reply each of the last extras
    B, B_extra = (
        bank_features(reward.relevance, prompts, bank),
        bank_features(reward.relevance, extra + more, bank),
    )
    tfidf = TfidfVectorizer(analyzer=relevance_prompt_tokens, min_df=3, sublinear_tf=True).fit(
        extra + more
    )
    svd = TruncatedSVD(50, random_state=0).fit(tfidf.transform(extra + more))
    T, T_extra = (
        svd.transform(tfidf.transform(prompts)),
        svd.transform(tfidf.transform(extra + more)),
    )
    order = np.random.default_rng(0).permutation(len(prompts))

    result = {
        "ceiling": round(ceiling, 4),
        "validation_prompts": len(prompts),
        "k": samples.shape[1],
        "extras": {
            "dump": {"n": len(extra), "k": dump["extra_samples"].shape[1]},
            "more": {"n": len(more), "k": args.more_k, "sample_seconds": sample_seconds},
        },
        "bank": args.bank,
        "curve": {},
    }
    sizes = [n for n in (0, 1000, 3000, 5000, 7000, 9000) if n <= len(y_extra)]
    for n in sorted(set(sizes + [len(y_extra)])):
        row = {
            "states": cross_validated(order, F, F_extra[:n], y, y_extra[:n]),
            "states+bank": cross_validated(
                order, np.c_[F, B], np.c_[F_extra, B_extra][:n], y, y_extra[:n]
            ),
            "states+bank+tfidf": cross_validated(
                order, np.c_[F, B, T], np.c_[F_extra, B_extra, T_extra][:n], y, y_extra[:n]
            ),
        }
        row = {name: round(r2_score(prediction, y), 4) for name, prediction in row.items()}
        result["curve"][n] = row
        print(
            f"{n:5d} extra prompts: "
            + ", ".join(f"{k} {v:.4f} ({v / ceiling:.0%})" for k, v in row.items()),
            flush=True,
        )
    X, X_extra = np.c_[F, B], np.c_[F_extra, B_extra]
    models = {
        "gradient_boosting": lambda: HistGradientBoostingRegressor(
            max_iter=300,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=40,
            l2_regularization=1.0,
            random_state=0,
        ),
        "mlp": lambda: MLPRegressor(
            hidden_layer_sizes=(64,), alpha=10.0, early_stopping=True, max_iter=300, random_state=0
        ),
    }
    result["nonlinear_states+bank"] = {}
    for name, make in models.items():
        r2 = round(nonlinear_r2(order, X, X_extra, y, y_extra, make), 4)
        result["nonlinear_states+bank"][name] = r2
        print(
            f"{name} on states+bank, {len(y_extra)} extra prompts: {r2:.4f} ({r2 / ceiling:.0%})",
            flush=True,
        )
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
