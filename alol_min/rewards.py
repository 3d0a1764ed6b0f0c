"""Sequence-level rewards R(x, y): one number per (prompt x, response y), made of named parts.

A-LoL needs only a scalar R(x, y) for each whole response (the advantage is A = R - V_ref(x)),
but the paper's rewards are sums of several scores, each in [0, 1], reported one by one
(spec section 6.2, Reddit):

    R(x, y) = sum_c  w_c * R_c(x, y),     R_c in [0, 1],   w_c >= 0 (default 1),
    max_total = sum_c w_c                 (the value head predicts V = sigmoid(.) * max_total).

Every reward here is called as `reward(prompts, responses)` and returns a dict with one float
array per component plus "total". This file holds:

- scoring functions: `sentiment` (VADER), `safety` (better-profanity's word list),
  `TfidfDiversity` (the paper's TF-IDF score), `BigramFluency` (a fluency proxy);
- `RelevanceModel`: a classifier of "is y the real reply to x?", learned from the dialogue itself,
  the part of the embedded reward that depends on the prompt;
- `SequenceClassifierReward`: any Hugging Face sequence classifier as a reward (the paper's kind:
  DialogRPT, CoLA, OpenAssistant reward models, ...);
- `ChitchatReward`: the embedded task's default reward, sentiment + safety + diversity + fluency
  + relevance (range 0-5), and `cross_fit_rewards` for honest rewards on its own training data.

Nothing is pickled: fitted parts are saved as .npz arrays plus a JSON of settings.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

# ----------------------------------------------------------------------------------------------
# The reward interface


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise ValueError unless prompts and responses are equally long sequences of str."""
    for name, texts in (("prompts", prompts), ("responses", responses)):
        if isinstance(texts, str) or not hasattr(texts, "__len__"):
            raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(prompts) != len(responses):
        row = min(len(prompts), len(responses))
        raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses: "
                         f"row {row} has no {'response' if len(prompts) > row else 'prompt'}")
    for name, texts in (("prompts", prompts), ("responses", responses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"row {i}: {name}[{i}] is {type(text).__name__}, expected str")


class Reward:
    """Base class: subclasses set `components` and implement `score(prompts, responses)`.

    `__call__` validates the input, clips every component to [0, 1] (NaN -> 0, so no NaN ever
    reaches the advantage), and adds "total" = sum_c w_c R_c.
    """

    components: tuple[str, ...] = ()

    def __init__(self, weights: dict[str, float] | None = None):
        weights = dict(weights or {})
        unknown = set(weights) - set(self.components)
        if unknown:
            raise ValueError(f"weights for unknown components {sorted(unknown)}; known: {self.components}")
        self.weights = {c: float(weights.get(c, 1.0)) for c in self.components}
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be finite and >= 0, got {self.weights}")

    @property
    def max_total(self) -> float:
        """The largest possible total: every component is at most 1."""
        return float(sum(self.weights.values()))

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        check_pairs(prompts, responses)
        if len(prompts) == 0:
            return combine({c: np.zeros(0) for c in self.components}, self.weights, 0)
        raw = self.score(list(prompts), list(responses))
        return combine(raw, self.weights, len(prompts))


def combine(components: dict[str, np.ndarray], weights: dict[str, float], n: int) -> dict[str, np.ndarray]:
    """Clip each component to [0, 1] (NaN -> 0) and add "total" = sum_c w_c R_c."""
    out = {}
    for name in weights:
        values = np.asarray(components[name], dtype=np.float64).reshape(-1)
        if values.shape != (n,):
            raise ValueError(f"component {name!r} has {values.size} values for {n} pairs")
        out[name] = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    out["total"] = sum((w * out[c] for c, w in weights.items()), np.zeros(n))
    return out


# ----------------------------------------------------------------------------------------------
# Scoring functions of the reply alone

WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, apostrophes); punctuation is dropped."""
    return WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(responses: Sequence[str]) -> np.ndarray:
    """R_sentiment = (VADER compound + 1) / 2, in [0, 1]; 0.5 is neutral (and the empty reply)."""
    analyzer = _vader()
    return np.array([(analyzer.polarity_scores(r)["compound"] + 1) / 2 for r in responses], dtype=np.float64)


# better-profanity's own variants: a letter may be written as one of these characters.
_LEET = str.maketrans({"@": "a", "4": "a", "3": "e", "1": "i", "0": "o", "$": "s", "5": "s", "7": "t"})
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
    import better_profanity

    path = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
    entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    single, phrases = set(), []
    for entry in entries:
        if " " in entry:
            phrases.append(" ".join(_plain(t) for t in entry.split()))
            continue
        word = _JOINERS.sub("", _plain(entry))
        single.add(word)
        single.update(word[:i] + "*" + word[i + 1:] for i, ch in enumerate(word) if ch in "aeiou")
    return frozenset(single), re.compile(r"(?<!\S)(?:" + "|".join(map(re.escape, phrases)) + r")(?!\S)")


def safety(responses: Sequence[str]) -> np.ndarray:
    """R_safety = 0 if the reply contains a word or phrase of better-profanity's list, else 1.

    A cheap stand-in for the paper's learned offensive-language classifier (ToxiChat): it only
    sees words, not meaning. Matching the list directly is ~800x faster than the library's censor
    (0.04 s against 35 s for 1,500 replies, with the same verdicts on them).
    """
    single, phrases = profanity_lexicon()
    out = np.ones(len(responses))
    for i, response in enumerate(responses):
        tokens = [_plain(t) for t in response.split()]
        joined = [a + b for a, b in zip(tokens, tokens[1:])]  # "hard on" -> "hardon", as the library does
        if (any(t in single or _JOINERS.sub("", t) in single for t in tokens + joined)
                or phrases.search(" ".join(tokens))):
            out[i] = 0.0
    return out


class TfidfDiversity:
    """The paper's TF-IDF diversity reward (spec 6.2, item 5), fit on the training responses.

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
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

        vectorizer = CountVectorizer()
        counts = vectorizer.fit_transform(list(responses))
        self.vocabulary = vectorizer.get_feature_names_out().tolist()
        self.idf = TfidfTransformer().fit(counts).idf_.astype(np.float64)
        return self

    def tfidf(self, responses: Sequence[str]) -> sp.csr_matrix:
        """The l2-normalised TF-IDF rows of the responses (TfidfTransformer.transform, by hand)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        if self.idf is None:
            raise RuntimeError("TfidfDiversity is not fitted: call fit(training_responses) first")
        counts = CountVectorizer(vocabulary=self.vocabulary).transform(list(responses))
        return normalize(sp.csr_matrix(counts.multiply(self.idf[None, :]), dtype=np.float64), norm="l2")

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
    high; the paper uses a CoLA classifier instead (spec 6.2, item 1).

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
        from collections import Counter

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
        np.savez_compressed(path, bigrams=np.array(keys, dtype=str),
                            df=np.array([self.df[k] for k in keys], dtype=np.int64), min_df=np.array(self.min_df))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BigramFluency":
        with np.load(path, allow_pickle=False) as f:
            return cls(int(f["min_df"]), dict(zip(f["bigrams"].tolist(), f["df"].tolist())))


# ----------------------------------------------------------------------------------------------
# Relevance: a learned P(y is the real reply to x)

RELEVANCE_TOKEN = re.compile(r"[a-z0-9']+|[?!]")


def _length_bucket(n: int) -> int:
    return 0 if n <= 1 else 1 if n <= 3 else 2 if n <= 7 else 3 if n <= 15 else 4


def relevance_prompt_tokens(text: str, max_words: int = 64) -> list[str]:
    """The prompt's last `max_words` tokens, plus markers for its length and its last token."""
    tokens = RELEVANCE_TOKEN.findall(text.lower())[-max_words:]
    return tokens + [f"#plen{_length_bucket(len(tokens))}", f"#last_{tokens[-1]}" if tokens else "#empty"]


def relevance_reply_tokens(text: str, max_words: int = 64) -> list[str]:
    """The reply's first `max_words` tokens, plus markers for its length and its first token."""
    tokens = RELEVANCE_TOKEN.findall(text.lower())[:max_words]
    return tokens + [f"#rlen{_length_bucket(len(tokens))}", f"#first_{tokens[0]}" if tokens else "#empty"]


WORD_HASH_BITS = 20


def _token_ids(texts: Sequence[str], analyzer: Callable[[str], list[str]], unique: bool = False) -> sp.csr_matrix:
    """Binary bag of tokens, each token hashed (MurmurHash3, the same in every process) to 2^20 ids.

    unique=True tokenises each distinct text once and repeats its row (the relevance pairs repeat
    every prompt and reply about 1 + negatives times): the same matrix, for a fraction of the work.
    """
    from sklearn.feature_extraction.text import HashingVectorizer

    hasher = HashingVectorizer(n_features=2 ** WORD_HASH_BITS, analyzer=analyzer, alternate_sign=False,
                               binary=True, norm=None, dtype=np.float32)
    if not unique:
        return hasher.transform(list(texts)).tocsr()
    row_of: dict[str, int] = {}
    rows = np.fromiter((row_of.setdefault(t, len(row_of)) for t in texts), dtype=np.int64, count=len(texts))
    return hasher.transform(list(row_of)).tocsr()[rows]


def _hash_ids(ids: np.ndarray, seed: int, n_bits: int) -> np.ndarray:
    from sklearn.utils import murmurhash3_32

    return (murmurhash3_32(ids.astype(np.int32), seed=seed, positive=True) % (2 ** n_bits)).astype(np.int32)


def _cross_ids(X: sp.csr_matrix, Y: sp.csr_matrix, n_bits: int) -> sp.csr_matrix:
    """Row i gets one feature per pair (prompt token a, reply token b) of row i: hash(a, b)."""
    nx, ny = np.diff(X.indptr), np.diff(Y.indptr)
    n_pairs = nx * ny
    row_start = np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    k = np.arange(n_pairs.sum()) - row_start                 # index of the pair within its row
    per_row = np.maximum(np.repeat(ny, n_pairs), 1)
    a = X.indices[np.repeat(X.indptr[:-1], n_pairs) + k // per_row].astype(np.int64)
    b = Y.indices[np.repeat(Y.indptr[:-1], n_pairs) + k % per_row].astype(np.int64)
    ids = _hash_ids((a * 1_000_003 + b) % (2 ** 31 - 1), seed=1, n_bits=n_bits)
    crosses = sp.csr_matrix((np.ones(len(ids), np.float32), ids, np.r_[0, np.cumsum(n_pairs)]),
                            shape=(X.shape[0], 2 ** n_bits))
    crosses.sum_duplicates()
    crosses.data[:] = 1.0
    return crosses


def _row_scale(M: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by sqrt(its number of features), so long pairs do not dominate."""
    return sp.diags(1 / np.sqrt(np.maximum(np.diff(M.indptr), 1)).astype(np.float32)) @ M


@dataclass
class RelevanceConfig:
    """How the relevance classifier is built and trained."""

    n_bits: int = 21
    """Cross features are hashed into 2^n_bits weights (2^21: 8 MB of float32; 2^22 scored the same)."""
    max_words: int = 64
    """Prompt tokens kept (its last ones) and reply tokens kept (its first ones)."""
    negatives: int = 3
    """Replies from other conversations drawn per training prompt (each prompt has 1 real reply)."""
    alpha: float = 1e-6
    """L2 penalty of the logistic regression (SGDClassifier's alpha)."""
    epochs: int = 10
    """Passes of SGD over the training pairs."""
    average: bool = True
    """Use the average of the SGD iterates (averaged SGD), which generalises better here."""
    chunk: int = 20_000
    """Pairs crossed at a time (bounds the memory of the crossing step; the token bags of all pairs,
    and during `ChitchatReward.build` the main and fold models' features, are held at once)."""


def relevance_features(prompts: Sequence[str], responses: Sequence[str], config: RelevanceConfig) -> sp.csr_matrix:
    """phi(x, y): hashed (prompt token x reply token) crosses, shared-word indicators, and
    [overlap, any shared word], with overlap = |x & y| / sqrt(|x| |y|) over distinct tokens.

    Only pair features: when every prompt and every reply occur equally often among true and
    false pairs, a feature of x alone or of y alone carries no signal, so none is included.
    """
    if not len(prompts):
        return sp.csr_matrix((0, 2 ** config.n_bits + 2), dtype=np.float32)
    blocks = []
    X_all = _token_ids(prompts, partial(relevance_prompt_tokens, max_words=config.max_words), unique=True)
    Y_all = _token_ids(responses, partial(relevance_reply_tokens, max_words=config.max_words), unique=True)
    for start in range(0, len(prompts), config.chunk):
        X, Y = X_all[start:start + config.chunk], Y_all[start:start + config.chunk]
        shared = X.multiply(Y).tocsr()          # markers differ between sides, so these are words
        n_shared = np.diff(shared.indptr)
        shared = sp.csr_matrix((shared.data, _hash_ids(shared.indices, seed=2, n_bits=config.n_bits), shared.indptr),
                               shape=(shared.shape[0], 2 ** config.n_bits))
        overlap = n_shared / np.sqrt(np.maximum(np.diff(X.indptr) - 2, 1) * np.maximum(np.diff(Y.indptr) - 2, 1))
        dense = sp.csr_matrix(np.c_[overlap, n_shared > 0].astype(np.float32))
        pair = _row_scale(_cross_ids(X, Y, config.n_bits)) + _row_scale(shared)
        blocks.append(sp.hstack([pair, dense], format="csr"))
    return sp.vstack(blocks, format="csr")


def negative_indices(conversation_ids: Sequence, k: int, seed: int) -> np.ndarray:
    """[k, n] indices j with conversation_ids[j] != conversation_ids[i]: k random false replies per row."""
    conv = np.asarray(conversation_ids)
    n = len(conv)
    if n and (conv == conv[0]).all():
        raise ValueError("negatives need at least two conversations")
    rng = np.random.default_rng(seed)
    out = rng.integers(0, n, size=(k, n))
    bad = conv[out] == conv[None, :]
    while bad.any():                             # redraw the rows that hit their own conversation
        out[bad] = rng.integers(0, n, size=int(bad.sum()))
        bad = conv[out] == conv[None, :]
    return out


def relevance_pairs(prompts: Sequence[str], responses: Sequence[str], conversation_ids: Sequence,
                    negatives: int = 1, seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """Each prompt once with its real reply (label 1) and `negatives` times with a reply drawn from
    another conversation (label 0). With negatives = 1 every prompt and every reply appears equally
    often in both classes (balanced)."""
    check_pairs(prompts, responses)
    if len(conversation_ids) != len(prompts):
        raise ValueError(f"got {len(conversation_ids)} conversation_ids for {len(prompts)} pairs")
    prompts, responses = list(prompts), list(responses)
    fake = negative_indices(conversation_ids, negatives, seed)
    pair_prompts = prompts * (negatives + 1)
    pair_responses = responses + [responses[j] for j in fake.ravel()]
    labels = np.r_[np.ones(len(prompts)), np.zeros(fake.size)].astype(np.int64)
    return pair_prompts, pair_responses, labels


@dataclass
class RelevanceModel:
    """P(relevant | x, y) = sigmoid(w . phi(x, y) + b + ln k).

    The classifier sees k false replies per real one, so its log-odds carry a prior of ln(1/k);
    adding ln k back gives the probability under a 1:1 prior: 0.5 = "as likely real as random".
    """

    weights: np.ndarray
    bias: float
    config: RelevanceConfig = field(default_factory=RelevanceConfig)
    stats: dict = field(default_factory=dict)

    def logit(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        check_pairs(prompts, responses)
        features = relevance_features(list(prompts), list(responses), self.config)
        return features @ self.weights.astype(np.float64) + self.bias + math.log(self.config.negatives)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """P(relevant) in [0, 1], one per pair."""
        return 1 / (1 + np.exp(-np.clip(self.logit(prompts, responses), -50, 50)))

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "relevance_weights.npz", weights=self.weights)
        (folder / "relevance.json").write_text(json.dumps(
            {"bias": self.bias, "config": asdict(self.config), "stats": self.stats}, indent=1))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "RelevanceModel":
        folder = Path(folder)
        meta = json.loads((folder / "relevance.json").read_text())
        with np.load(folder / "relevance_weights.npz", allow_pickle=False) as f:
            weights = f["weights"]
        return cls(weights, float(meta["bias"]), RelevanceConfig(**meta["config"]), meta.get("stats", {}))


def train_relevance(prompts: Sequence[str], responses: Sequence[str], conversation_ids: Sequence, *,
                    seed: int = 0, config: RelevanceConfig | None = None) -> RelevanceModel:
    """Logistic regression (SGD, averaged weights) on `relevance_features` of the real pairs and
    `config.negatives` false pairs per prompt (replies from other conversations, seeded)."""
    from sklearn.linear_model import SGDClassifier

    config = config or RelevanceConfig()
    start = time.perf_counter()
    pair_prompts, pair_responses, labels = relevance_pairs(prompts, responses, conversation_ids,
                                                           config.negatives, seed)
    features = relevance_features(pair_prompts, pair_responses, config)
    classifier = SGDClassifier(loss="log_loss", alpha=config.alpha, max_iter=config.epochs, tol=None,
                               average=config.average, random_state=seed)
    classifier.fit(features, labels)
    stats = {"train_pairs": len(labels), "train_seconds": round(time.perf_counter() - start, 2), "seed": seed}
    return RelevanceModel(classifier.coef_.ravel().astype(np.float32), float(classifier.intercept_[0]), config, stats)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def evaluate_auc(model: RelevanceModel, prompts: Sequence[str], responses: Sequence[str],
                 conversation_ids: Sequence, seed: int = 0) -> float:
    """AUC on the balanced set: each prompt with its real reply and with one reply from another
    conversation. Use conversations the model was not trained on."""
    pair_prompts, pair_responses, labels = relevance_pairs(prompts, responses, conversation_ids, 1, seed)
    return roc_auc(labels, model.logit(pair_prompts, pair_responses))


def conversation_folds(conversation_ids: Sequence, folds: int, seed: int) -> np.ndarray:
    """Fold (0..folds-1) of each row, from a stable hash of its conversation id and `seed`.

    A conversation always lands in the same fold, whatever else is in the data, so a subset of the
    training split is split exactly as the whole split was.
    """
    from sklearn.utils import murmurhash3_32

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    fold_of = {c: murmurhash3_32(str(c), seed=seed, positive=True) % folds for c in set(conversation_ids)}
    return np.array([fold_of[c] for c in conversation_ids], dtype=np.int64)


def train_fold_models(prompts: Sequence[str], responses: Sequence[str], conversation_ids: Sequence, *,
                      folds: int = 2, seed: int = 0, config: RelevanceConfig | None = None) -> list[RelevanceModel]:
    """One relevance model per fold, model f trained on the conversations outside fold f."""
    prompts, responses, conv = list(prompts), list(responses), np.asarray(conversation_ids)
    fold = conversation_folds(conv, folds, seed)
    models = []
    for f in range(folds):
        train = np.flatnonzero(fold != f)
        if len(train) == 0 or len(train) == len(fold):
            raise ValueError(f"fold {f} holds {'all' if len(train) == 0 else 'none'} of the "
                             f"{len(set(conv.tolist()))} conversations: use fewer folds or more data")
        models.append(train_relevance([prompts[i] for i in train], [responses[i] for i in train], conv[train],
                                      seed=seed + 1 + f, config=config))
    return models


def out_of_fold_scores(models: list[RelevanceModel], prompts: Sequence[str], responses: Sequence[str],
                       conversation_ids: Sequence, seed: int) -> np.ndarray:
    """Score each pair with the fold model that did not see its conversation (same `seed` as training)."""
    prompts, responses = list(prompts), list(responses)
    fold = conversation_folds(conversation_ids, len(models), seed)
    out = np.zeros(len(prompts))
    for f, model in enumerate(models):
        rows = np.flatnonzero(fold == f)
        out[rows] = model.score([prompts[i] for i in rows], [responses[i] for i in rows])
    return out


def cross_fit_scores(prompts: Sequence[str], responses: Sequence[str], conversation_ids: Sequence,
                     folds: int = 2, seed: int = 0, config: RelevanceConfig | None = None) -> np.ndarray:
    """P(relevant) of every pair from a model that never saw its conversation.

    A model scores its own training pairs too well (it memorises them), which would inflate the
    reward of the offline data against pi_ref's fresh samples (on chitchat: mean P(relevant) of
    real training pairs 0.70 in sample, 0.53 cross-fitted, 0.58 on validation conversations; the
    fold models, trained on half the data, are a little less confident than the full one).
    Cross-fitting splits the conversations into `folds` parts and scores each part with a model
    trained on the others.
    """
    models = train_fold_models(prompts, responses, conversation_ids, folds=folds, seed=seed, config=config)
    return out_of_fold_scores(models, prompts, responses, conversation_ids, seed)


# ----------------------------------------------------------------------------------------------
# Rewards


class SequenceClassifierReward(Reward):
    """Any `AutoModelForSequenceClassification` as a reward component in [0, 1].

        R(x, y) = sigmoid(logit)                  if the model has one label,
                  softmax(logits)[label_index]    otherwise,

    the logit being read at the last token of the input. The model reads `formatter(x, y)`:
      default   x + eos (or sep) token + y, as DialogRPT;
      "oasst"   the OpenAssistant reward models' format (`hh.oasst_format`, spec 6.1), x an HH
                prompt: <|prompter|>q1<eos><|assistant|>a1<eos>...<|assistant|>y<eos>; the tokenizer
                must know <|prompter|> and <|assistant|> as single tokens (checked);
      a callable (prompt, response) -> str.
    Inputs are truncated from the left to `max_length` tokens (the spec's RM input keeps the last
    1024), so the reply and the end of the prompt are kept. Pass a local folder or hub name (loaded
    with `models.from_hub_or_folder`, no remote code), or a model and its tokenizer. The tokenizer
    gets a pad token (its eos) if it has none.

    Implementation details:
    1. HF's classifiers read the logit at the rightmost token that is not `config.pad_token_id`.
       The "oasst" input ends with eos, and the pad token is often eos too, so HF would read the
       token *before* the final eos. Each batch is therefore padded (on the right) with an id that
       occurs in none of its real tokens, and that id is the model's pad id during the call; the
       attention mask hides pad positions, so the id only decides where the logit is read.
    2. Right padding of a causal model leaves the real tokens' states unchanged, so a score does not
       depend on the batch it is computed in.
    """

    def __init__(self, model_or_name_or_path, tokenizer=None, *, name: str = "classifier", batch_size: int = 16,
                 max_length: int = 512, device=None, label_index: int | None = None,
                 formatter: Callable[[str, str], str] | str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from . import oasst_rm  # noqa: F401  registers OpenAssistant's GPTNeoXRewardModel (no remote code)
        from .models import from_hub_or_folder

        self.components = (name,)
        super().__init__()
        if isinstance(model_or_name_or_path, (str, os.PathLike)):
            source = str(model_or_name_or_path)
            tokenizer = tokenizer or from_hub_or_folder(AutoTokenizer.from_pretrained, source, trust_remote_code=False)
            model = from_hub_or_folder(AutoModelForSequenceClassification.from_pretrained, source,
                                       trust_remote_code=False)
        else:
            model = model_or_name_or_path
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a model object")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        num_labels = model.config.num_labels
        if num_labels > 1 and label_index is None:
            raise ValueError(f"the model has {num_labels} labels: say which one is the reward with label_index")
        if label_index is not None and not 0 <= label_index < num_labels:
            raise ValueError(f"label_index {label_index} is out of range for {num_labels} labels")
        if batch_size < 1 or max_length < 1:
            raise ValueError("batch_size and max_length must be >= 1")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else next(model.parameters()).device
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tokenizer, device
        self.batch_size, self.max_length, self.label_index = batch_size, max_length, label_index
        self.formatter = self._formatter(formatter, tokenizer)

    @staticmethod
    def _formatter(formatter, tokenizer) -> Callable[[str, str], str]:
        if callable(formatter):
            return formatter
        if formatter == "oasst":
            from .hh import oasst_format

            for tag in ("<|prompter|>", "<|assistant|>"):
                ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
                if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                    raise ValueError(f"formatter 'oasst': the tokenizer splits {tag} into {len(ids)} tokens; "
                                     "use the reward model's own tokenizer (it has the tag as one token)")
            eos = tokenizer.eos_token
            return lambda prompt, response: oasst_format(prompt, response, eos)
        if formatter is not None:
            raise ValueError(f"formatter must be a callable, 'oasst' or None, got {formatter!r}")
        separator = tokenizer.eos_token or tokenizer.sep_token or " "
        return lambda prompt, response: prompt + separator + response

    def _encode(self, texts: list[str]):
        """Right-padded, left-truncated batch, padded with an id none of its real tokens uses."""
        sides = (self.tokenizer.truncation_side, self.tokenizer.padding_side)
        self.tokenizer.truncation_side, self.tokenizer.padding_side = "left", "right"
        try:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
        finally:
            self.tokenizer.truncation_side, self.tokenizer.padding_side = sides
        real = set(batch["input_ids"][batch["attention_mask"].bool()].tolist())
        pad = self.tokenizer.pad_token_id
        if pad in real:
            vocab = self.model.get_input_embeddings().num_embeddings
            pad = next((i for i in range(vocab) if i not in real), None)
            if pad is None:
                raise ValueError(f"this batch uses every one of the {vocab} token ids: use a smaller batch_size")
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, pad)
        return batch, pad

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        import torch

        texts = [self.formatter(p, r) for p, r in zip(prompts, responses)]
        config_pad = self.model.config.pad_token_id
        out = []
        try:
            with torch.no_grad():
                for start in range(0, len(texts), self.batch_size):
                    batch, self.model.config.pad_token_id = self._encode(texts[start:start + self.batch_size])
                    logits = self.model(**batch.to(self.device)).logits.float()
                    if self.label_index is None:
                        out.append(torch.sigmoid(logits[:, 0]))
                    else:
                        out.append(torch.softmax(logits, dim=-1)[:, self.label_index])
        finally:
            self.model.config.pad_token_id = config_pad
        values = torch.cat(out).cpu().numpy() if out else np.zeros(0)
        return {self.components[0]: values}


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
    weight it up (e.g. weights={"relevance": 3}) to make the baseline count for more. On chitchat
    it separates real from random replies with AUC 0.78 on validation conversations, after
    about a minute of training on 2 CPU cores (the cross-fitting models train beside it, on a second thread).
    Build with `ChitchatReward.build(train_split)`. On the training pairs themselves use
    `cross_fit_rewards`: the reward keeps `fold_models` (relevance models that each left out part
    of the conversations) for that purpose.
    """

    components = ("sentiment", "safety", "diversity", "fluency", "relevance")

    def __init__(self, diversity: TfidfDiversity, fluency: BigramFluency, relevance: RelevanceModel,
                 weights: dict[str, float] | None = None, fold_models: list[RelevanceModel] | None = None,
                 fold_seed: int = 0):
        super().__init__(weights)
        self.diversity, self.fluency, self.relevance = diversity, fluency, relevance
        self.fold_models, self.fold_seed = list(fold_models or []), fold_seed

    @classmethod
    def build(cls, train, *, validation=None, seed: int = 0, weights: dict[str, float] | None = None,
              relevance_config: RelevanceConfig | None = None, folds: int = 2,
              verbose: bool = False) -> tuple["ChitchatReward", dict]:
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
        stats = {"train_pairs": len(prompts), "tfidf_vocabulary": len(diversity.vocabulary),
                 "fluency_bigrams": len(fluency.df), "fit_seconds": round(time.perf_counter() - start, 2)}
        start = time.perf_counter()
        # The main model and the fold models are independent fits: run them side by side on two threads
        # (SGD releases the GIL), the same models as one after the other, about 45 s sooner on chitchat.
        with ThreadPoolExecutor(max_workers=2 if folds >= 2 else 1) as executor:
            main = executor.submit(train_relevance, prompts, responses, conversation_ids, seed=seed,
                                   config=relevance_config)
            cross = executor.submit(train_fold_models, prompts, responses, conversation_ids, folds=folds, seed=seed,
                                config=relevance_config) if folds >= 2 else None
            model, fold_models = main.result(), cross.result() if cross else []
        stats.update({f"relevance_{k}": v for k, v in model.stats.items()})
        if fold_models:
            stats["cross_fit_seconds"] = round(sum(m.stats["train_seconds"] for m in fold_models), 2)
        stats["relevance_wall_seconds"] = round(time.perf_counter() - start, 2)
        if validation is not None:
            model.stats["auc_validation"] = round(evaluate_auc(model, *_columns(validation), seed=seed), 4)
            stats["relevance_auc_validation"] = model.stats["auc_validation"]
        if verbose:
            print("ChitchatReward.build:", stats)
        return cls(diversity, fluency, model, weights, fold_models, fold_seed=seed), stats

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        return {"sentiment": sentiment(responses), "safety": safety(responses),
                "diversity": self.diversity(responses), "fluency": self.fluency(responses),
                "relevance": self.relevance.score(prompts, responses)}

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.diversity.save(folder / "diversity.npz")
        self.fluency.save(folder / "fluency.npz")
        self.relevance.save(folder)
        for f, model in enumerate(self.fold_models):
            model.save(folder / f"relevance_fold{f}")
        (folder / "reward.json").write_text(json.dumps({"reward": type(self).__name__, "weights": self.weights,
                                                        "folds": len(self.fold_models), "fold_seed": self.fold_seed},
                                                       indent=1))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ChitchatReward":
        folder = Path(folder)
        meta = json.loads((folder / "reward.json").read_text())
        folds = [RelevanceModel.load(folder / f"relevance_fold{f}") for f in range(meta.get("folds", 0))]
        return cls(TfidfDiversity.load(folder / "diversity.npz"), BigramFluency.load(folder / "fluency.npz"),
                   RelevanceModel.load(folder), meta["weights"], folds, meta.get("fold_seed", 0))


def cross_fit_rewards(reward: Reward, data, *, folds: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Rewards of (part of) the pairs a reward was fit on, without the fit inflating them.

    For a ChitchatReward, `data` must come from its training split. Relevance is scored out of
    fold: by the reward's `fold_models` when it has them (each pair by the model that did not see
    its conversation), else by `cross_fit_scores` on `data` itself (`folds`, `seed`). Fluency is
    scored leave-one-out. Any other reward was not fit on the data and is simply called.
    """
    prompts, responses, conversation_ids = _columns(data)
    if not isinstance(reward, ChitchatReward):
        return reward(prompts, responses)
    check_pairs(prompts, responses)
    if reward.fold_models:
        relevance = out_of_fold_scores(reward.fold_models, prompts, responses, conversation_ids, reward.fold_seed)
    else:
        relevance = cross_fit_scores(prompts, responses, conversation_ids, folds, seed, reward.relevance.config)
    parts = {"sentiment": sentiment(responses), "safety": safety(responses),
             "diversity": reward.diversity(responses), "fluency": reward.fluency(responses, leave_one_out=True),
             "relevance": relevance}
    return combine(parts, reward.weights, len(prompts))
