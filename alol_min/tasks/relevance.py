"""Relevance: a learned P(y is the real reply to x), the part of chitchat's reward that reads x.

A logistic regression on hashed features of the prompt's and the reply's words and their
crossings, trained to tell each real (turn -> reply) pair from replies drawn from other
conversations. Because it depends on x, it is what gives V_ref(x) something to predict.
Cross-fitting (`train_fold_models`, `out_of_fold_scores`) scores each training pair with a model
that never saw its conversation.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.utils import murmurhash3_32

from alol_min.rewards import check_pairs

# Relevance: a learned P(y is the real reply to x)

RELEVANCE_TOKEN = re.compile(r"[a-z0-9']+|[?!]")


def _length_bucket(n: int) -> int:
    return 0 if n <= 1 else 1 if n <= 3 else 2 if n <= 7 else 3 if n <= 15 else 4


def relevance_prompt_tokens(text: str, max_words: int = 64) -> list[str]:
    """The prompt's last `max_words` tokens, plus markers for its length and its last token."""
    tokens = RELEVANCE_TOKEN.findall(text.lower())[-max_words:]
    return tokens + [
        f"#plen{_length_bucket(len(tokens))}",
        f"#last_{tokens[-1]}" if tokens else "#empty",
    ]


def relevance_reply_tokens(text: str, max_words: int = 64) -> list[str]:
    """The reply's first `max_words` tokens, plus markers for its length and its first token."""
    tokens = RELEVANCE_TOKEN.findall(text.lower())[:max_words]
    return tokens + [
        f"#rlen{_length_bucket(len(tokens))}",
        f"#first_{tokens[0]}" if tokens else "#empty",
    ]


WORD_HASH_BITS = 20


def _token_ids(
    texts: Sequence[str], analyzer: Callable[[str], list[str]], unique: bool = False
) -> sp.csr_matrix:
    """Binary bag of tokens, each token hashed (MurmurHash3, the same in every process) to 2^20 ids.

    unique=True tokenises each distinct text once and repeats its row (the relevance pairs repeat
    every prompt and reply about 1 + negatives times): the same matrix, for a fraction of the work.
    """

    hasher = HashingVectorizer(
        n_features=2**WORD_HASH_BITS,
        analyzer=analyzer,
        alternate_sign=False,
        binary=True,
        norm=None,
        dtype=np.float32,
    )
    if not unique:
        return hasher.transform(list(texts)).tocsr()
    row_of: dict[str, int] = {}
    rows = np.fromiter(
        (row_of.setdefault(t, len(row_of)) for t in texts), dtype=np.int64, count=len(texts)
    )
    return hasher.transform(list(row_of)).tocsr()[rows]


def _hash_ids(ids: np.ndarray, seed: int, n_bits: int) -> np.ndarray:

    return (murmurhash3_32(ids.astype(np.int32), seed=seed, positive=True) % (2**n_bits)).astype(
        np.int32
    )


def _cross_ids(X: sp.csr_matrix, Y: sp.csr_matrix, n_bits: int) -> sp.csr_matrix:
    """Row i gets one feature per pair (prompt token a, reply token b) of row i: hash(a, b)."""
    nx, ny = np.diff(X.indptr), np.diff(Y.indptr)
    n_pairs = nx * ny
    row_start = np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    k = np.arange(n_pairs.sum()) - row_start  # index of the pair within its row
    per_row = np.maximum(np.repeat(ny, n_pairs), 1)
    a = X.indices[np.repeat(X.indptr[:-1], n_pairs) + k // per_row].astype(np.int64)
    b = Y.indices[np.repeat(Y.indptr[:-1], n_pairs) + k % per_row].astype(np.int64)
    ids = _hash_ids((a * 1_000_003 + b) % (2**31 - 1), seed=1, n_bits=n_bits)
    crosses = sp.csr_matrix(
        (np.ones(len(ids), np.float32), ids, np.r_[0, np.cumsum(n_pairs)]),
        shape=(X.shape[0], 2**n_bits),
    )
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


def relevance_features(
    prompts: Sequence[str], responses: Sequence[str], config: RelevanceConfig
) -> sp.csr_matrix:
    """phi(x, y): hashed (prompt token x reply token) crosses, shared-word indicators, and
    [overlap, any shared word], with overlap = |x & y| / sqrt(|x| |y|) over distinct tokens.

    Only pair features: when every prompt and every reply occur equally often among true and
    false pairs, a feature of x alone or of y alone carries no signal, so none is included.
    """
    if not len(prompts):
        return sp.csr_matrix((0, 2**config.n_bits + 2), dtype=np.float32)
    blocks = []
    X_all = _token_ids(
        prompts, partial(relevance_prompt_tokens, max_words=config.max_words), unique=True
    )
    Y_all = _token_ids(
        responses, partial(relevance_reply_tokens, max_words=config.max_words), unique=True
    )
    for start in range(0, len(prompts), config.chunk):
        X, Y = X_all[start : start + config.chunk], Y_all[start : start + config.chunk]
        shared = X.multiply(Y).tocsr()  # markers differ between sides, so these are words
        n_shared = np.diff(shared.indptr)
        shared = sp.csr_matrix(
            (shared.data, _hash_ids(shared.indices, seed=2, n_bits=config.n_bits), shared.indptr),
            shape=(shared.shape[0], 2**config.n_bits),
        )
        overlap = n_shared / np.sqrt(
            np.maximum(np.diff(X.indptr) - 2, 1) * np.maximum(np.diff(Y.indptr) - 2, 1)
        )
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
    while bad.any():  # redraw the rows that hit their own conversation
        out[bad] = rng.integers(0, n, size=int(bad.sum()))
        bad = conv[out] == conv[None, :]
    return out


def relevance_pairs(
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    negatives: int = 1,
    seed: int = 0,
) -> tuple[list[str], list[str], np.ndarray]:
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
        return (
            features @ self.weights.astype(np.float64) + self.bias + math.log(self.config.negatives)
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """P(relevant) in [0, 1], one per pair."""
        return 1 / (1 + np.exp(-np.clip(self.logit(prompts, responses), -50, 50)))

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "relevance_weights.npz", weights=self.weights)
        (folder / "relevance.json").write_text(
            json.dumps(
                {"bias": self.bias, "config": asdict(self.config), "stats": self.stats}, indent=1
            )
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "RelevanceModel":
        folder = Path(folder)
        meta = json.loads((folder / "relevance.json").read_text())
        with np.load(folder / "relevance_weights.npz", allow_pickle=False) as f:
            weights = f["weights"]
        return cls(
            weights, float(meta["bias"]), RelevanceConfig(**meta["config"]), meta.get("stats", {})
        )


def train_relevance(
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    *,
    seed: int = 0,
    config: RelevanceConfig | None = None,
) -> RelevanceModel:
    """Logistic regression (SGD, averaged weights) on `relevance_features` of the real pairs and
    `config.negatives` false pairs per prompt (replies from other conversations, seeded)."""

    config = config or RelevanceConfig()
    start = time.perf_counter()
    pair_prompts, pair_responses, labels = relevance_pairs(
        prompts, responses, conversation_ids, config.negatives, seed
    )
    features = relevance_features(pair_prompts, pair_responses, config)
    classifier = SGDClassifier(
        loss="log_loss",
        alpha=config.alpha,
        max_iter=config.epochs,
        tol=None,
        average=config.average,
        random_state=seed,
    )
    classifier.fit(features, labels)
    stats = {
        "train_pairs": len(labels),
        "train_seconds": round(time.perf_counter() - start, 2),
        "seed": seed,
    }
    return RelevanceModel(
        classifier.coef_.ravel().astype(np.float32), float(classifier.intercept_[0]), config, stats
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative)."""

    return float(roc_auc_score(labels, scores))


def evaluate_auc(
    model: RelevanceModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    seed: int = 0,
) -> float:
    """AUC on the balanced set: each prompt with its real reply and with one reply from another
    conversation. Use conversations the model was not trained on."""
    pair_prompts, pair_responses, labels = relevance_pairs(
        prompts, responses, conversation_ids, 1, seed
    )
    return roc_auc(labels, model.logit(pair_prompts, pair_responses))


def conversation_folds(conversation_ids: Sequence, folds: int, seed: int) -> np.ndarray:
    """Fold (0..folds-1) of each row, from a stable hash of its conversation id and `seed`.

    A conversation always lands in the same fold, whatever else is in the data, so a subset of the
    training split is split exactly as the whole split was.
    """

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    fold_of = {
        c: murmurhash3_32(str(c), seed=seed, positive=True) % folds for c in set(conversation_ids)
    }
    return np.array([fold_of[c] for c in conversation_ids], dtype=np.int64)


def train_fold_models(
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    *,
    folds: int = 2,
    seed: int = 0,
    config: RelevanceConfig | None = None,
) -> list[RelevanceModel]:
    """One relevance model per fold, model f trained on the conversations outside fold f."""
    prompts, responses, conv = list(prompts), list(responses), np.asarray(conversation_ids)
    fold = conversation_folds(conv, folds, seed)
    models = []
    for f in range(folds):
        train = np.flatnonzero(fold != f)
        if len(train) == 0 or len(train) == len(fold):
            raise ValueError(
                f"fold {f} holds {'all' if len(train) == 0 else 'none'} of the "
                f"{len(set(conv.tolist()))} conversations: use fewer folds or more data"
            )
        models.append(
            train_relevance(
                [prompts[i] for i in train],
                [responses[i] for i in train],
                conv[train],
                seed=seed + 1 + f,
                config=config,
            )
        )
    return models


def out_of_fold_scores(
    models: list[RelevanceModel],
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    seed: int,
) -> np.ndarray:
    """Score each pair with the fold model that did not see its conversation (same `seed` as training)."""
    prompts, responses = list(prompts), list(responses)
    fold = conversation_folds(conversation_ids, len(models), seed)
    out = np.zeros(len(prompts))
    for f, model in enumerate(models):
        rows = np.flatnonzero(fold == f)
        out[rows] = model.score([prompts[i] for i in rows], [responses[i] for i in rows])
    return out


def cross_fit_scores(
    prompts: Sequence[str],
    responses: Sequence[str],
    conversation_ids: Sequence,
    folds: int = 2,
    seed: int = 0,
    config: RelevanceConfig | None = None,
) -> np.ndarray:
    """P(relevant) of every pair from a model that never saw its conversation.

    A model scores its own training pairs too well (it memorises them), which would inflate the
    reward of the offline data against pi_ref's fresh samples (on chitchat: mean P(relevant) of
    real training pairs 0.70 in sample, 0.53 cross-fitted, 0.58 on validation conversations; the
    fold models, trained on half the data, are a little less confident than the full one).
    Cross-fitting splits the conversations into `folds` parts and scores each part with a model
    trained on the others.
    """
    models = train_fold_models(
        prompts, responses, conversation_ids, folds=folds, seed=seed, config=config
    )
    return out_of_fold_scores(models, prompts, responses, conversation_ids, seed)
