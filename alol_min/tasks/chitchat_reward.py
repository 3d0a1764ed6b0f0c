"""The chitchat reward: five scores in [0, 1] of a reply to a previous turn, total in [0, 5].

    sentiment  (VADER compound + 1) / 2                  reply only
    safety     1 unless a word of better-profanity's list  reply only
    diversity  the paper's TF-IDF score                  reply only
    fluency    known-bigram share x distinct share       reply only
    relevance  P(real reply | prompt), `tasks.relevance`  prompt AND reply

It stands in for the paper's Reddit reward (docs/method.md §9.2). The fitted parts (TF-IDF, bigram
table, relevance model) are fit on the training split, so the offline pairs' own rewards are
cross-fitted (`cross_fit_rewards`). Nothing is pickled: fitted parts are saved as .npz arrays plus
a JSON of settings.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import better_profanity
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.preprocessing import normalize
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from alol_min.rewards import Reward, check_pairs, combine
from alol_min.tasks.relevance import (
    RelevanceConfig,
    RelevanceModel,
    cross_fit_scores,
    evaluate_auc,
    out_of_fold_scores,
    train_fold_models,
    train_relevance,
)

WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, apostrophes); punctuation is dropped."""
    return WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _vader():

    return SentimentIntensityAnalyzer()


def sentiment(responses: Sequence[str]) -> np.ndarray:
    """R_sentiment = (VADER compound + 1) / 2, in [0, 1]; 0.5 is neutral (and the empty reply)."""
    analyzer = _vader()
    return np.array(
        [(analyzer.polarity_scores(r)["compound"] + 1) / 2 for r in responses], dtype=np.float64
    )


# better-profanity's own variants: a letter may be written as one of these characters.
_LEET = str.maketrans(
    {"@": "a", "4": "a", "3": "e", "1": "i", "0": "o", "$": "s", "5": "s", "7": "t"}
)
_JOINERS = re.compile(r"[-._]")
_EDGE_PUNCT = "\"'.,!?;:()[]{}<>"


def _plain(token: str) -> str:
    """Lower-cased, surrounding punctuation stripped, leetspeak undone: "$h1t!" -> "shit"."""
    return token.lower().strip(_EDGE_PUNCT).translate(_LEET)


@lru_cache(maxsize=1)
def profanity_lexicon() -> tuple[frozenset[str], re.Pattern]:
    """better-profanity's word list as (set of single words, regex of its multi-word phrases).

    Single words are stored `_plain`, without -._ joiners ("f-u-c-k" -> "fuck"), and with any one
    vowel written "*" ("sh*t"): the variants better-profanity itself catches.
    """

    path = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
    entries = [
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    single, phrases = set(), []
    for entry in entries:
        if " " in entry:
            phrases.append(" ".join(_plain(t) for t in entry.split()))
            continue
        word = _JOINERS.sub("", _plain(entry))
        single.add(word)
        single.update(word[:i] + "*" + word[i + 1 :] for i, ch in enumerate(word) if ch in "aeiou")
    return frozenset(single), re.compile(
        r"(?<!\S)(?:" + "|".join(map(re.escape, phrases)) + r")(?!\S)"
    )


def safety(responses: Sequence[str]) -> np.ndarray:
    """R_safety = 0 if the reply contains a word or phrase of better-profanity's list, else 1.

    A cheap stand-in for the paper's learned offensive-language classifier (ToxiChat): it only
    sees words, not meaning. The list is matched directly, which gives the library's verdicts at a
    small fraction of its censor's cost.
    """
    single, phrases = profanity_lexicon()
    out = np.ones(len(responses))
    for i, response in enumerate(responses):
        tokens = [_plain(t) for t in response.split()]
        joined = [
            a + b for a, b in zip(tokens, tokens[1:])
        ]  # "hard on" -> "hardon", as the library does
        if any(
            t in single or _JOINERS.sub("", t) in single for t in tokens + joined
        ) or phrases.search(" ".join(tokens)):
            out[i] = 0.0
    return out


class TfidfDiversity:
    """The paper's TF-IDF diversity reward (docs/method.md §9.2, reward item 5), fit on the training responses.

    With CountVectorizer's default tokens (lower-cased words of 2+ characters) and
    TfidfTransformer's defaults (smooth idf, l2 norm), a reply y with counts tf_w gets

        idf_w = ln((1 + n) / (1 + df_w)) + 1                 (n training responses)
        v_w   = tf_w idf_w / || tf idf ||_2                  (over y's known words, nnz of them)
        R_div = mean_w v_w * (nnz / 10 if nnz < 5 else 1)    (0 if nnz = 0)

    Scale: v is l2-normalised and non-negative, so mean_w v_w <= 1 / sqrt(nnz) <= 1; R_div is in
    [0, 1] with no rescaling. Its ceiling depends on length: 0.1 for one known word (not 1.0,
    thanks to the paper's nnz / 10 factor), 0.2 for four, 1/sqrt(5) = 0.45 for five, then falling
    like 1 / sqrt(nnz); so it favours replies of about five distinct, rare words.
    """

    def __init__(self, vocabulary: Sequence[str] | None = None, idf: np.ndarray | None = None):
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        self.idf = np.asarray(idf, dtype=np.float64) if idf is not None else None

    def fit(self, responses: Sequence[str]) -> "TfidfDiversity":

        vectorizer = CountVectorizer()
        counts = vectorizer.fit_transform(list(responses))
        self.vocabulary = vectorizer.get_feature_names_out().tolist()
        self.idf = TfidfTransformer().fit(counts).idf_.astype(np.float64)
        return self

    def tfidf(self, responses: Sequence[str]) -> sp.csr_matrix:
        """The l2-normalised TF-IDF rows of the responses (TfidfTransformer.transform, by hand)."""

        if self.idf is None:
            raise RuntimeError("TfidfDiversity is not fitted: call fit(training_responses) first")
        counts = CountVectorizer(vocabulary=self.vocabulary).transform(list(responses))
        return normalize(
            sp.csr_matrix(counts.multiply(self.idf[None, :]), dtype=np.float64), norm="l2"
        )

    def __call__(self, responses: Sequence[str]) -> np.ndarray:
        weights = self.tfidf(responses)
        nnz = np.diff(weights.indptr)
        mean = np.asarray(weights.sum(axis=1)).ravel() / np.maximum(nnz, 1)
        return mean * np.where(nnz < 5, nnz / 10, 1.0)

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(path, vocabulary=np.array(self.vocabulary, dtype=str), idf=self.idf)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TfidfDiversity":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["vocabulary"].tolist(), f["idf"])


def _bigrams(text: str) -> list[str]:
    tokens = ["<s>"] + words(text) + ["</s>"]
    return [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


class BigramFluency:
    """A fluency proxy: the share of the reply's word bigrams that people write, times its
    share of distinct bigrams.

        known(y)    = #{bigrams of <s> y </s> seen in >= min_df training responses} / #bigrams
        distinct(y) = #{distinct bigrams} / #bigrams
        R_fluency   = known(y) * distinct(y)          (0 for a reply with no words)

    Why: it catches the failure modes of a small LM (non-words, broken word order, "I think I
    think I think", empty output) and, being a ratio, gives no reward for writing longer. It
    cannot see meaning across more than two words, so fluent-looking word salad still scores
    high; the paper uses a CoLA classifier instead (docs/method.md §9.2, reward item 1).

    Honest scores on the fit data: df counts each training response once, so a response's own
    bigrams add exactly 1 to their df. `leave_one_out=True` raises the bar to min_df + 1, which
    scores a response that was in the fit corpus as if it had been left out.
    """

    def __init__(self, min_df: int = 2, df: dict[str, int] | None = None):
        if min_df < 1:
            raise ValueError(f"min_df must be >= 1, got {min_df}")
        self.min_df = min_df
        self.df = df

    def fit(self, responses: Sequence[str]) -> "BigramFluency":

        counts = Counter()
        for response in responses:
            counts.update(set(_bigrams(response)))
        self.df = {b: c for b, c in counts.items() if c >= self.min_df}
        return self

    def __call__(self, responses: Sequence[str], leave_one_out: bool = False) -> np.ndarray:
        if self.df is None:
            raise RuntimeError("BigramFluency is not fitted: call fit(training_responses) first")
        bar = self.min_df + int(leave_one_out)
        out = np.zeros(len(responses))
        for i, response in enumerate(responses):
            bigrams = _bigrams(response)
            if len(bigrams) < 2:  # only "<s> </s>": no words
                continue
            known = sum(self.df.get(b, 0) >= bar for b in bigrams)
            out[i] = known / len(bigrams) * len(set(bigrams)) / len(bigrams)
        return out

    def save(self, path: str | os.PathLike) -> None:
        keys = sorted(self.df)
        np.savez_compressed(
            path,
            bigrams=np.array(keys, dtype=str),
            df=np.array([self.df[k] for k in keys], dtype=np.int64),
            min_df=np.array(self.min_df),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BigramFluency":
        with np.load(path, allow_pickle=False) as f:
            return cls(int(f["min_df"]), dict(zip(f["bigrams"].tolist(), f["df"].tolist())))


# ----------------------------------------------------------------------------------------------
def _columns(data) -> tuple[list[str], list[str], list]:
    """(prompts, responses, conversation_ids) of a `datasets.Dataset` or a dict of lists."""
    return list(data["prompt"]), list(data["response"]), list(data["conversation_id"])


class ChitchatReward(Reward):
    """The embedded task's reward: five scores in [0, 1], total in [0, 5] with unit weights.

        sentiment  (VADER compound + 1) / 2                        reply only
        safety     1 unless a word of better-profanity's list       reply only
        diversity  the paper's TF-IDF score (TfidfDiversity)        reply only
        fluency    known-bigram share x distinct share (BigramFluency)   reply only
        relevance  P(real reply | prompt) (RelevanceModel)          prompt AND reply

    Relevance is the only part that depends on the prompt, so it is what makes V_ref(x) matter;
    weight it up (e.g. weights={"relevance": 3}) to make the baseline count for more. Its AUC on
    validation conversations is in the reward's stats (`relevance_auc_validation`; RESULTS.md); the
    cross-fitting models train beside it, on a second thread.
    Build with `ChitchatReward.build(train_split)`. On the training pairs themselves use
    `cross_fit_rewards`: the reward keeps `fold_models` (relevance models that each left out part
    of the conversations) for that purpose.
    """

    components = ("sentiment", "safety", "diversity", "fluency", "relevance")

    def __init__(
        self,
        diversity: TfidfDiversity,
        fluency: BigramFluency,
        relevance: RelevanceModel,
        weights: dict[str, float] | None = None,
        fold_models: list[RelevanceModel] | None = None,
        fold_seed: int = 0,
    ):
        super().__init__(weights)
        self.diversity, self.fluency, self.relevance = diversity, fluency, relevance
        self.fold_models, self.fold_seed = list(fold_models or []), fold_seed

    @classmethod
    def build(
        cls,
        train,
        *,
        validation=None,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        relevance_config: RelevanceConfig | None = None,
        folds: int = 2,
        verbose: bool = False,
    ) -> tuple["ChitchatReward", dict]:
        """Fit TF-IDF and the bigram table on the training responses, train the relevance model on
        the training pairs, and (folds >= 2) the cross-fitting models for `cross_fit_rewards`.

        `train` / `validation`: Datasets (or dicts of lists) with prompt, response and
        conversation_id. Returns (reward, stats); stats has the held-out relevance AUC when a
        validation split is given.
        """
        prompts, responses, conversation_ids = _columns(train)
        start = time.perf_counter()
        diversity = TfidfDiversity().fit(responses)
        fluency = BigramFluency().fit(responses)
        stats = {
            "train_pairs": len(prompts),
            "tfidf_vocabulary": len(diversity.vocabulary),
            "fluency_bigrams": len(fluency.df),
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        start = time.perf_counter()
        # The main model and the fold models are independent fits: run them side by side on two threads
        # (SGD releases the GIL), the same models as one after the other, sooner.
        with ThreadPoolExecutor(max_workers=2 if folds >= 2 else 1) as executor:
            main = executor.submit(
                train_relevance,
                prompts,
                responses,
                conversation_ids,
                seed=seed,
                config=relevance_config,
            )
            cross = (
                executor.submit(
                    train_fold_models,
                    prompts,
                    responses,
                    conversation_ids,
                    folds=folds,
                    seed=seed,
                    config=relevance_config,
                )
                if folds >= 2
                else None
            )
            model, fold_models = main.result(), cross.result() if cross else []
        stats.update({f"relevance_{k}": v for k, v in model.stats.items()})
        if fold_models:
            stats["cross_fit_seconds"] = round(
                sum(m.stats["train_seconds"] for m in fold_models), 2
            )
        stats["relevance_wall_seconds"] = round(time.perf_counter() - start, 2)
        if validation is not None:
            model.stats["auc_validation"] = round(
                evaluate_auc(model, *_columns(validation), seed=seed), 4
            )
            stats["relevance_auc_validation"] = model.stats["auc_validation"]
        if verbose:
            print("ChitchatReward.build:", stats)
        return cls(diversity, fluency, model, weights, fold_models, fold_seed=seed), stats

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        return {
            "sentiment": sentiment(responses),
            "safety": safety(responses),
            "diversity": self.diversity(responses),
            "fluency": self.fluency(responses),
            "relevance": self.relevance.score(prompts, responses),
        }

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.diversity.save(folder / "diversity.npz")
        self.fluency.save(folder / "fluency.npz")
        self.relevance.save(folder)
        for f, model in enumerate(self.fold_models):
            model.save(folder / f"relevance_fold{f}")
        (folder / "reward.json").write_text(
            json.dumps(
                {
                    "reward": type(self).__name__,
                    "weights": self.weights,
                    "folds": len(self.fold_models),
                    "fold_seed": self.fold_seed,
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ChitchatReward":
        folder = Path(folder)
        meta = json.loads((folder / "reward.json").read_text())
        folds = [
            RelevanceModel.load(folder / f"relevance_fold{f}") for f in range(meta.get("folds", 0))
        ]
        return cls(
            TfidfDiversity.load(folder / "diversity.npz"),
            BigramFluency.load(folder / "fluency.npz"),
            RelevanceModel.load(folder),
            meta["weights"],
            folds,
            meta.get("fold_seed", 0),
        )


def cross_fit_rewards(
    reward: ChitchatReward, data, *, folds: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Rewards of (part of) the pairs `reward` was fit on, without the fit inflating them: chitchat's
    `Task.offline_reward`.

    `data` must come from the reward's training split. Relevance is scored out of fold: by the
    reward's `fold_models` when it has them (each pair by the model that did not see its
    conversation), else by `cross_fit_scores` on `data` itself (`folds`, `seed`). Fluency is scored
    leave-one-out.
    """
    prompts, responses, conversation_ids = _columns(data)
    check_pairs(prompts, responses)
    if reward.fold_models:
        relevance = out_of_fold_scores(
            reward.fold_models, prompts, responses, conversation_ids, reward.fold_seed
        )
    else:
        relevance = cross_fit_scores(
            prompts, responses, conversation_ids, folds, seed, reward.relevance.config
        )
    parts = {
        "sentiment": sentiment(responses),
        "safety": safety(responses),
        "diversity": reward.diversity(responses),
        "fluency": reward.fluency(responses, leave_one_out=True),
        "relevance": relevance,
    }
    return combine(parts, reward.weights, len(prompts))
