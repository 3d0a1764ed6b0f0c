"""Can other features lift V_ref on chitchat? A study on a `bench/value_fit.py --dump` file.

    python bench/value_fit.py --task chitchat --prompts 1000 --k 8 --extra-prompts 3000 --dump dump.npz
    python bench/value_features.py dump.npz <pi_ref folder>

Same protocol as value_fit.py (5 folds of the validation prompts, the extra training prompts always
in the fit, the ridge penalty chosen by an inner 5-fold CV), for:
  states        the pooled pi_ref states (value_fit's ridge);
  components    one ridge per reward component, summed;
  g             g(x): ridge on the prompt's TF-IDF, fit to the cross-fitted rewards of the human
                replies of the whole training split (out of fold for the extra prompts), alone and
                beside the states.
Prints held-out R^2 against the k-sample mean and its share of the noise ceiling. For a dump made
with chitchat's `tiny` pi_ref and --extra-prompts > 0 (the prompt length is the tiny preset's).
"""

import json
import sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from alol_min.lm.batching import encode_prompts
from alol_min.lm.models import ModelConfig, load_policy
from alol_min.tasks import load_task
from alol_min.tasks.chitchat_reward import cross_fit_rewards
from alol_min.tasks.relevance import conversation_folds
from alol_min.values import noise_ceiling, pooled_features, prompt_states, r2_score

ALPHAS = 10.0 ** np.arange(-1, 5.5, 0.5)


def ridge_path(Z, y, Z_new, alphas):
    """Predictions on Z_new of the centred ridge fit (Z, y), for every alpha (one SVD)."""
    b = y.mean()
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    coef = U.T @ (y - b)
    projected = Z_new @ Vt.T
    return np.stack([projected @ (s / (s**2 + a) * coef) + b for a in alphas])


def prompt_features(model, tokenizer, texts, max_prompt):
    """value_fit's ridge features: pooled frozen pi_ref states of each prompt (500 prompts at a time)."""
    return np.concatenate(
        [
            pooled_features(
                prompt_states(
                    model,
                    encode_prompts(tokenizer, texts[i : i + 500], max_prompt),
                    tokenizer.pad_token_id,
                )
            )
            for i in range(0, len(texts), 500)
        ]
    )


def folds(order):
    """(held, keep) index pairs of the 5 folds of the validation prompts in `order`."""
    for fold in range(5):
        held = order[fold::5]
        yield held, np.setdiff1d(order, held)


def cross_validated(order, F, F_extra, y, y_extra):
    """Pooled held-out predictions: 5 folds of the validation prompts, extras always fit."""
    prediction = np.zeros(len(y))
    for held, keep in folds(order):
        F_fit, y_fit = np.concatenate([F[keep], F_extra]), np.concatenate([y[keep], y_extra])
        mean, scale = F_fit.mean(0), F_fit.std(0) + 1e-6
        Z = (F_fit - mean) / scale
        inner = np.random.default_rng(1).permutation(len(Z))
        errors = np.zeros(len(ALPHAS))
        for j in range(5):
            test = inner[j::5]
            train = np.setdiff1d(inner, test)
            errors += (
                (ridge_path(Z[train], y_fit[train], Z[test], ALPHAS) - y_fit[test]) ** 2
            ).sum(1)
        prediction[held] = ridge_path(
            Z, y_fit, (F[held] - mean) / scale, [ALPHAS[errors.argmin()]]
        )[0]
    return prediction


def main(dump_path, pi_ref_folder):
    dump = np.load(dump_path)
    prompts, extra = list(dump["prompts"]), list(dump["extra_prompts"])
    samples, extra_samples = dump["samples"], dump["extra_samples"]
    k = samples.shape[1]
    task = load_task("chitchat")
    reward = task.train_reward
    model, tokenizer = load_policy(pi_ref_folder)
    max_prompt = ModelConfig.preset("tiny").max_prompt_tokens

    def features(texts):
        return prompt_features(model, tokenizer, texts, max_prompt)

    def components(texts, responses):  # k-sample mean of each component
        repeated = [p for p in texts for _ in range(k)]
        scores = reward(repeated, list(responses))
        return {
            c: np.asarray(scores[c], float).reshape(len(texts), k).mean(1)
            for c in reward.components
        }

    F, F_extra = features(prompts), features(extra)
    C, C_extra = components(prompts, dump["responses"]), components(extra, dump["extra_responses"])
    y, y_extra = samples.mean(1), extra_samples.mean(1)
    assert np.allclose(sum(C.values()), y, atol=1e-6), "the components do not sum to the total"
    ceiling = noise_ceiling(samples)["ceiling_r2"]

    # g(x) from the human replies of the training split
    train = task.data["train"]
    human = cross_fit_rewards(reward, train)
    fold = conversation_folds(np.array(train["conversation_id"]), 2, seed=7)
    tfidf = TfidfVectorizer(min_df=3, ngram_range=(1, 2), sublinear_tf=True).fit(train["prompt"])
    X_train = tfidf.transform(train["prompt"])
    g, g_extra = [], []
    for name in ("total", "relevance"):
        target = np.asarray(human[name], float)
        g.append(Ridge(alpha=10.0).fit(X_train, target).predict(tfidf.transform(prompts)))
        out_of_fold = np.zeros(len(target))
        for f in (0, 1):
            model_f = Ridge(alpha=10.0).fit(X_train[fold != f], target[fold != f])
            out_of_fold[fold == f] = model_f.predict(X_train[fold == f])
        g_extra.append(out_of_fold[: len(extra)])  # the extras are the first training prompts
    g, g_extra = np.stack(g, 1), np.stack(g_extra, 1)

    order = np.random.default_rng(0).permutation(len(prompts))
    variants = {
        "states": lambda: cross_validated(order, F, F_extra, y, y_extra),
        "states_components": lambda: sum(
            cross_validated(order, F, F_extra, C[c], C_extra[c]) for c in C
        ),
        "g_only": lambda: cross_validated(order, g, g_extra, y, y_extra),
        "states+g": lambda: cross_validated(
            order, np.c_[F, g], np.c_[F_extra, g_extra], y, y_extra
        ),
        "states+g_components": lambda: sum(
            cross_validated(order, np.c_[F, g], np.c_[F_extra, g_extra], C[c], C_extra[c])
            for c in C
        ),
        "states_noextra": lambda: cross_validated(order, F, F_extra[:0], y, y_extra[:0]),
        "states+g_noextra": lambda: cross_validated(
            order, np.c_[F, g], np.c_[F_extra, g_extra][:0], y, y_extra[:0]
        ),
    }
    result = {}
    for name, predict in variants.items():
        result[name] = round(r2_score(predict(), y), 4)
        print(name, result[name], f"{result[name] / ceiling:.0%} of the ceiling", flush=True)
    result["ceiling"] = round(ceiling, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
