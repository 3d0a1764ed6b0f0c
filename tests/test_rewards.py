"""Unit tests of alol_min.rewards: each scorer by hand, the relevance model on a slice of chitchat,
and SequenceClassifierReward on a tiny GPT-2 classifier saved to and loaded from disk."""

import math
import os
from functools import partial

import chitchat_dataset
import torch
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from alol_min.rewards import SequenceClassifierReward, check_pairs, combine
from alol_min.tasks.base import DataReport
from alol_min.tasks.chitchat import ChitchatConfig, chitchat_pairs
from alol_min.tasks.chitchat_reward import (
    BigramFluency,
    ChitchatReward,
    TfidfDiversity,
    cross_fit_rewards,
    safety,
    sentiment,
)
from alol_min.tasks.relevance import (
    RelevanceConfig,
    RelevanceModel,
    _token_ids,
    conversation_folds,
    cross_fit_scores,
    negative_indices,
    out_of_fold_scores,
    relevance_features,
    relevance_prompt_tokens,
    train_fold_models,
    train_relevance,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# Scoring functions


def test_sentiment_orders_positive_neutral_negative():
    pos, neutral, neg, empty = sentiment(
        ["I love this, it is wonderful!", "the bus is at six", "I hate this, it is awful.", ""]
    )
    assert 1 >= pos > neutral > neg >= 0
    assert neutral == empty == 0.5


@pytest.mark.parametrize(
    "text",
    [
        "well fuck that",
        "you are a piece of sh*t",
        "F-U-C-K this",
        "$hit happens",
        "that was a blow job joke",
        "BLOW   JOB!",
        "what the hell.",
        "he has a hard on",
    ],
)
def test_safety_flags_listed_words(text):
    assert safety([text])[0] == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "what a lovely day",
        "my class starts at nine",
        "the assassin's creed game",
        "I like to blow bubbles at my job",
    ],
)
def test_safety_passes_clean_text(text):
    assert safety([text])[0] == 1.0


TINY_CORPUS = ["the cat sat", "the dog sat", "the cat ran", "big red fox jumps high"]


def test_tfidf_diversity_by_hand():
    diversity = TfidfDiversity().fit(TINY_CORPUS)
    n = len(TINY_CORPUS)
    idf = lambda df: math.log((1 + n) / (1 + df)) + 1  # noqa: E731  (smooth idf)
    cat, dog = idf(2), idf(1)
    the, ran = idf(3), idf(1)
    two_words = (cat + dog) / math.sqrt(cat**2 + dog**2) / 2 * 0.2  # mean weight x nnz/10
    four_words = (the + cat + dog + ran) / math.sqrt(the**2 + cat**2 + dog**2 + ran**2) / 4 * 0.4
    scores = diversity(
        ["cat dog", "cat zebra", "the cat dog ran", "big red fox jumps high", "zebra", "", "a I"]
    )
    np.testing.assert_allclose(
        scores, [two_words, 0.1, four_words, 1 / math.sqrt(5), 0, 0, 0], rtol=1e-12
    )
    assert ((scores >= 0) & (scores <= 1)).all()


def test_tfidf_diversity_equals_sklearn_pipeline():

    replies = ["the cat sat on the mat", "dog", "the the the cat", "big fox and the dog ran high"]
    vectorizer = CountVectorizer().fit(TINY_CORPUS)
    tfidf = (
        TfidfTransformer()
        .fit(vectorizer.transform(TINY_CORPUS))
        .transform(vectorizer.transform(replies))
    )
    expected = [
        tfidf[i].data.mean() * (tfidf[i].nnz / 10 if tfidf[i].nnz < 5 else 1)
        for i in range(len(replies))
    ]
    np.testing.assert_allclose(TfidfDiversity().fit(TINY_CORPUS)(replies), expected, rtol=1e-12)


FLUENCY_CORPUS = [
    "i like dogs",
    "I like dogs!",
    "you like cats",
    "ok",
    "ok",
    "we went to the beach and had a lovely day",
    "We went to the beach and had a lovely day.",
]


def test_fluency_by_hand():
    fluency = BigramFluency(min_df=2).fit(FLUENCY_CORPUS)
    # "<s> i", "i like", "like dogs", "dogs </s>" each seen in 2 replies; "you like cats" only once.
    got = fluency(
        ["i like dogs", "you like cats", "i like cats", "I like dogs I like dogs", "", "?!"]
    )
    np.testing.assert_allclose(got, [1.0, 0.0, 0.5, 6 / 7 * 5 / 7, 0.0, 0.0])
    # Leave-one-out: a reply of the fit corpus no longer counts its own bigrams.
    np.testing.assert_allclose(fluency(["i like dogs"], leave_one_out=True), [0.0])


def test_fluency_does_not_grow_with_length():
    fluency = BigramFluency(min_df=2).fit(FLUENCY_CORPUS)
    sentence = "we went to the beach and had a lovely day"
    assert fluency(["ok"])[0] == fluency([sentence])[0] == 1.0  # short and long known replies tie
    repeated = fluency([" ".join([sentence] * k) for k in range(1, 6)])
    assert (np.diff(repeated) < 0).all()  # writing more of it only costs


def test_fitted_scorers_save_and_load(tmp_path):
    diversity = TfidfDiversity().fit(TINY_CORPUS)
    fluency = BigramFluency().fit(FLUENCY_CORPUS)
    diversity.save(tmp_path / "d.npz")
    fluency.save(tmp_path / "f.npz")
    replies = ["the cat sat on the dog", "i like dogs", ""]
    np.testing.assert_array_equal(
        TfidfDiversity.load(tmp_path / "d.npz")(replies), diversity(replies)
    )
    np.testing.assert_array_equal(BigramFluency.load(tmp_path / "f.npz")(replies), fluency(replies))


# ---------------------------------------------------------------------------------------------
# The reward interface


def test_bad_input_names_the_row():
    with pytest.raises(ValueError, match="row 2"):
        check_pairs(["a", "b", "c"], ["x", "y"])
    with pytest.raises(ValueError, match="row 1"):
        check_pairs(["a", None], ["x", "y"])
    with pytest.raises(ValueError, match=r"row 0: responses\[0\] is int"):
        check_pairs(["a"], [3])
    with pytest.raises(ValueError, match="list of strings"):
        check_pairs("a prompt", "a reply")


def test_combine_clips_and_weights_the_total():
    parts = {"a": np.array([0.2, 0.7, 1.5]), "b": np.array([0.5, 0.5, -1.0])}
    out = combine(parts, {"a": 1.0, "b": 2.0}, 3)
    np.testing.assert_allclose(out["a"], [0.2, 0.7, 1.0])
    np.testing.assert_allclose(out["total"], [1.2, 1.7, 1.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_combine_refuses_a_non_finite_score_naming_component_and_row(bad):
    parts = {"a": np.array([0.2, 0.3, 0.4]), "b": np.array([0.5, bad, bad])}
    with pytest.raises(ValueError, match=rf"reward component 'b' is {bad} at row 1 \(2 of 3 rows"):
        combine(parts, {"a": 1.0, "b": 1.0}, 3)


# ---------------------------------------------------------------------------------------------
# Relevance, on a slice of the real dialogue (conversations split into train / held out)

SMALL = RelevanceConfig(n_bits=18, negatives=1, alpha=1e-5, epochs=5)


@pytest.fixture(scope="module")
def dialogue():

    conversations = chitchat_dataset.Dataset()
    ids = sorted(conversations)[:800]
    rows = chitchat_pairs({c: conversations[c] for c in ids}, ChitchatConfig(), DataReport())
    split = {"train": set(ids[:700]), "held": set(ids[700:])}
    columns = ("prompt", "response", "conversation_id")
    return {
        name: {k: [r[k] for r in rows if r["conversation_id"] in conv] for k in columns}
        for name, conv in split.items()
    }


@pytest.fixture(scope="module")
def small_reward(dialogue):
    return ChitchatReward.build(
        dialogue["train"], validation=dialogue["held"], seed=0, relevance_config=SMALL, folds=2
    )


def test_relevance_beats_chance_on_held_out_conversations(small_reward, dialogue):
    reward, stats = small_reward
    assert stats["relevance_auc_validation"] > 0.6
    assert reward.relevance.stats["auc_validation"] == stats["relevance_auc_validation"]
    prompts, replies = dialogue["held"]["prompt"], dialogue["held"]["response"]
    real = reward.relevance.score(prompts, replies)
    shuffled = reward.relevance.score(prompts, replies[7:] + replies[:7])
    assert real.mean() > 0.5 > shuffled.mean()


def test_relevance_same_seed_same_scores_and_depends_on_prompt(dialogue):
    part = {k: v[:3000] for k, v in dialogue["train"].items()}
    first = train_relevance(
        part["prompt"], part["response"], part["conversation_id"], seed=0, config=SMALL
    )
    again = train_relevance(
        part["prompt"], part["response"], part["conversation_id"], seed=0, config=SMALL
    )
    other = train_relevance(
        part["prompt"], part["response"], part["conversation_id"], seed=1, config=SMALL
    )
    prompts, replies = dialogue["held"]["prompt"][:50], dialogue["held"]["response"][:50]
    np.testing.assert_array_equal(first.score(prompts, replies), again.score(prompts, replies))
    assert not np.array_equal(first.score(prompts, replies), other.score(prompts, replies))
    same_reply = first.score(prompts, [replies[0]] * len(prompts))
    assert same_reply.std() > 0.01  # one reply, many prompts: the score moves


def test_build_fits_the_same_models_as_one_after_the_other(small_reward, dialogue):
    """build() trains the main and the fold models on two threads: the result must not depend on it."""
    reward = small_reward[0]
    train = dialogue["train"]
    main = train_relevance(
        train["prompt"], train["response"], train["conversation_id"], seed=0, config=SMALL
    )
    folds = train_fold_models(
        train["prompt"], train["response"], train["conversation_id"], folds=2, seed=0, config=SMALL
    )
    np.testing.assert_array_equal(reward.relevance.weights, main.weights)
    assert reward.relevance.bias == main.bias and len(reward.fold_models) == 2
    for threaded, alone in zip(reward.fold_models, folds):
        np.testing.assert_array_equal(threaded.weights, alone.weights)


def test_relevance_save_load_round_trip(small_reward, tmp_path):
    model = small_reward[0].relevance
    model.save(tmp_path)
    loaded = RelevanceModel.load(tmp_path)
    assert loaded.config == model.config
    pairs = (["how are you?", "what did you eat", ""], ["good thanks and you", "pizza!", ""])
    np.testing.assert_array_equal(loaded.score(*pairs), model.score(*pairs))


def test_tokenising_each_distinct_text_once_gives_the_same_matrix():

    texts = ["how are you?", "fine", "how are you?", "", "fine", "what's up"] * 3
    analyzer = partial(relevance_prompt_tokens, max_words=64)
    once, every = _token_ids(texts, analyzer, unique=True), _token_ids(texts, analyzer)
    assert once.shape == every.shape and (once != every).nnz == 0
    np.testing.assert_array_equal(once.indices, every.indices)  # the same order within rows, too
    assert relevance_features([], [], SMALL).shape == (0, 2**SMALL.n_bits + 2)


def test_negatives_come_from_other_conversations():
    conv = np.array(["a", "a", "b", "c", "c", "c"])
    fake = negative_indices(conv, k=20, seed=0)
    assert fake.shape == (20, 6) and (conv[fake] != conv[None, :]).all()
    np.testing.assert_array_equal(fake, negative_indices(conv, k=20, seed=0))
    with pytest.raises(ValueError, match="two conversations"):
        negative_indices(["a", "a"], k=1, seed=0)


def test_folds_follow_conversations_and_survive_subsetting():
    conv = [f"c{i // 3}" for i in range(300)]
    folds = conversation_folds(conv, 2, seed=0)
    assert set(folds) == {0, 1}
    for c in set(conv):
        assert len({f for f, cc in zip(folds, conv) if cc == c}) == 1
    np.testing.assert_array_equal(conversation_folds(conv[100:200], 2, seed=0), folds[100:200])


def test_cross_fitting_removes_in_sample_inflation(small_reward, dialogue):
    reward = small_reward[0]
    part = {k: v[:2000] for k, v in dialogue["train"].items()}
    in_sample = reward(part["prompt"], part["response"])
    honest = cross_fit_rewards(reward, part)
    assert honest["relevance"].mean() < in_sample["relevance"].mean() - 0.05
    assert honest["fluency"].mean() < in_sample["fluency"].mean()
    by_hand = out_of_fold_scores(
        reward.fold_models, part["prompt"], part["response"], part["conversation_id"], 0
    )
    np.testing.assert_array_equal(honest["relevance"], by_hand)
    np.testing.assert_allclose(honest["total"], sum(honest[c] for c in reward.components))


def test_cross_fit_scores_without_stored_fold_models(dialogue):
    part = {k: v[:3000] for k, v in dialogue["train"].items()}
    scores = cross_fit_scores(
        part["prompt"], part["response"], part["conversation_id"], folds=2, seed=0, config=SMALL
    )
    assert scores.shape == (3000,) and ((scores >= 0) & (scores <= 1)).all()
    fit_on_all = train_relevance(
        part["prompt"], part["response"], part["conversation_id"], seed=0, config=SMALL
    )
    assert scores.mean() < fit_on_all.score(part["prompt"], part["response"]).mean() - 0.05


# ---------------------------------------------------------------------------------------------
# ChitchatReward


def test_chitchat_reward_components_in_range_and_total_is_sum(small_reward, dialogue):
    reward = small_reward[0]
    prompts = dialogue["held"]["prompt"][:200] + ["hi", "", "so what do you do?"]
    replies = dialogue["held"]["response"][:200] + ["", "", "hell yeah lol lol lol lol"]
    out = reward(prompts, replies)
    assert set(out) == set(reward.components) | {"total"}
    for name, values in out.items():
        assert values.shape == (len(prompts),) and not np.isnan(values).any(), name
    for name in reward.components:
        assert ((out[name] >= 0) & (out[name] <= 1)).all(), name
    np.testing.assert_allclose(out["total"], sum(out[c] for c in reward.components))
    assert reward.max_total == 5.0
    assert out["fluency"][-3] == 0.0 and out["diversity"][-3] == 0.0 and out["safety"][-1] == 0.0


def test_chitchat_reward_of_no_pairs(small_reward):
    out = small_reward[0]([], [])
    assert all(v.shape == (0,) for v in out.values())


def test_chitchat_reward_depends_on_prompt(small_reward):
    reward = small_reward[0]
    out = reward(["do you like dogs?", "what time is it"], ["yes I love dogs", "yes I love dogs"])
    assert out["relevance"][0] != out["relevance"][1]


def test_chitchat_reward_weights(small_reward):
    base = small_reward[0]
    heavy = ChitchatReward(base.diversity, base.fluency, base.relevance, weights={"relevance": 3})
    assert heavy.max_total == 7.0
    a, b = base(["hi there"], ["hello!"]), heavy(["hi there"], ["hello!"])
    np.testing.assert_allclose(b["total"], a["total"] + 2 * a["relevance"])
    with pytest.raises(ValueError, match="unknown"):
        ChitchatReward(base.diversity, base.fluency, base.relevance, weights={"humour": 1})


def test_chitchat_reward_save_load(small_reward, dialogue, tmp_path):
    reward = small_reward[0]
    reward.save(tmp_path / "reward")
    loaded = ChitchatReward.load(tmp_path / "reward")
    assert not list((tmp_path / "reward").rglob("*.pkl"))
    prompts, replies = dialogue["held"]["prompt"][:100], dialogue["held"]["response"][:100]
    for name, values in reward(prompts, replies).items():
        np.testing.assert_array_equal(loaded(prompts, replies)[name], values)
    part = {k: v[:300] for k, v in dialogue["train"].items()}
    np.testing.assert_array_equal(
        cross_fit_rewards(loaded, part)["total"], cross_fit_rewards(reward, part)["total"]
    )


def test_chitchat_reward_rejects_bad_input(small_reward):
    reward = small_reward[0]
    with pytest.raises(ValueError, match="row 1"):
        reward(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="row 1"):
        reward(["a", "b"], ["x", 7])


# ---------------------------------------------------------------------------------------------
# SequenceClassifierReward on a tiny GPT-2 classifier

WORDS = "the a cat dog sat ran on mat hello hi how are you fine good bad yes no".split()


def _tiny_classifier(folder, num_labels: int):

    vocab = {"[UNK]": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        num_labels=num_labels,
        bos_token_id=1,
        eos_token_id=1,
        initializer_range=0.5,
    )
    GPT2ForSequenceClassification(config).save_pretrained(folder)  # safetensors
    return folder


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    return _tiny_classifier(tmp_path_factory.mktemp("cls1"), num_labels=1)


PROMPTS = ["hello how are you", "hi", "the cat sat on the mat", "yes", "no no no", "how are you"]
REPLIES = ["fine", "good the dog", "yes", "bad", "how are you", ""]


def test_classifier_reward_in_unit_interval_and_batching_invariant(tiny_classifier):
    batched = SequenceClassifierReward(str(tiny_classifier), batch_size=4, max_length=32)
    single = SequenceClassifierReward(str(tiny_classifier), batch_size=1, max_length=32)
    out = batched(PROMPTS, REPLIES)
    assert set(out) == {"classifier", "total"} and batched.max_total == 1.0
    assert ((out["classifier"] > 0) & (out["classifier"] < 1)).all()
    assert out["classifier"].std() > 1e-3
    np.testing.assert_allclose(out["classifier"], single(PROMPTS, REPLIES)["classifier"], atol=1e-5)


def test_classifier_reward_keeps_the_end_of_long_inputs(tiny_classifier):
    reward = SequenceClassifierReward(str(tiny_classifier), name="depth", max_length=8)
    tail = "the dog sat on the mat how are you"
    long_a, long_b = " ".join(["cat"] * 60) + " " + tail, " ".join(["hello"] * 70) + " " + tail
    out = reward([long_a, long_b, tail], ["fine", "fine", "fine"])[
        "depth"
    ]  # 60+ tokens > n_positions
    assert out[0] == pytest.approx(out[1], abs=1e-6)  # only the shared end survives truncation
    roomy = SequenceClassifierReward(str(tiny_classifier), max_length=32)
    assert roomy([" ".join(["cat"] * 20) + " " + tail], ["fine"])["classifier"][0] != pytest.approx(
        out[0], abs=1e-6
    )


def test_classifier_reward_label_index_softmax(tmp_path):

    folder = _tiny_classifier(tmp_path, num_labels=3)
    with pytest.raises(ValueError, match="label_index"):
        SequenceClassifierReward(str(folder))
    reward = SequenceClassifierReward(
        str(folder), label_index=2, batch_size=2, formatter=lambda p, r: f"{p} {r}"
    )
    out = reward(PROMPTS[:3], REPLIES[:3])["classifier"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = [
            torch.softmax(model(**tokenizer(f"{p} {r}", return_tensors="pt")).logits[0], -1)[
                2
            ].item()
            for p, r in zip(PROMPTS[:3], REPLIES[:3])
        ]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_classifier_reward_accepts_model_objects(tiny_classifier):

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier)
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    by_object = SequenceClassifierReward(model, tokenizer)(PROMPTS, REPLIES)["classifier"]
    by_path = SequenceClassifierReward(str(tiny_classifier))(PROMPTS, REPLIES)["classifier"]
    np.testing.assert_allclose(by_object, by_path, atol=1e-6)
    with pytest.raises(ValueError, match="tokenizer"):
        SequenceClassifierReward(model)
