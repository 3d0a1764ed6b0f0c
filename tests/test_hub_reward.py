"""The paper's HHA reward path on a tiny local stand-in for the OpenAssistant reward model.

A 1-layer GPT-NeoX sequence classifier (the OA RMs are Pythia, i.e. GPT-NeoX) and a tokenizer with
the OA special tokens are saved to disk and loaded by path through SequenceClassifierReward: what
reaches the model must be exactly `lm.hh_format.oasst_format` of the HH prompt, read at the final EOS.
"""

import shutil
import time

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    GPTNeoXConfig,
    GPTNeoXForSequenceClassification,
)

from alol_min.lm.hh_format import oasst_format
from alol_min.lm.hub import HubUnavailableError
from alol_min.lm.models import train_tokenizer
from alol_min.rewards import SequenceClassifierReward
from alol_min.tasks.hh_rlhf import parse_pair

EOS = "<|endoftext|>"
SINGLE = {
    "chosen": "\n\nHuman: What is a roux?\n\nAssistant: A roux is flour cooked in butter.",
    "rejected": "\n\nHuman: What is a roux?\n\nAssistant: No idea, sorry.",
}
MULTI = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?"
    "\n\nAssistant: Use a clip-on tuner.\n\nThen tune each string.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?"
    "\n\nAssistant: Guitars are loud.",
}
EXPECTED = {  # written out by hand from docs/method.md §9.1: tag + turn + EOS, the response after the last tag
    "single": "<|prompter|>What is a roux?<|endoftext|><|assistant|>A roux is flour cooked in butter.<|endoftext|>",
    "multi": "<|prompter|>Hi<|endoftext|><|assistant|>Hello! How can I help?<|endoftext|>"
    "<|prompter|>How do I tune a guitar?<|endoftext|>"
    "<|assistant|>Use a clip-on tuner.\n\nThen tune each string.<|endoftext|>",
}


def _pairs():
    single, multi = parse_pair(SINGLE), parse_pair(MULTI)
    return [single["prompt"], multi["prompt"]], [single["chosen"], multi["chosen"]]


@pytest.fixture(scope="module")
def oa_folder(tmp_path_factory):
    """A saved tiny GPT-NeoX reward model whose tokenizer has <|prompter|> and <|assistant|>."""

    folder = tmp_path_factory.mktemp("oa-rm")
    prompts, responses = _pairs()
    texts = [p + r for p, r in zip(prompts, responses)] + [
        "Guitars are loud. No idea, sorry. tune each string"
    ] * 5
    tokenizer = train_tokenizer(texts * 4, vocab_size=400)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|prompter|>", "<|assistant|>"]})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.5,
    )
    GPTNeoXForSequenceClassification(config).save_pretrained(folder)
    return folder


def _capture_inputs(reward):
    """Record every (input_ids, attention_mask) the reward feeds its model."""
    seen = []
    reward.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"], kwargs["attention_mask"])),
        with_kwargs=True,
    )
    return seen


def _rows(seen):
    return [ids[mask.bool()].tolist() for ids, mask in seen for ids, mask in zip(ids, mask)]


def test_the_model_reads_exactly_the_openassistant_format(oa_folder):
    reward = SequenceClassifierReward(str(oa_folder), formatter="oasst", max_length=1024)
    seen = _capture_inputs(reward)
    prompts, responses = _pairs()
    reward(prompts, responses)
    rows = _rows(seen)
    tok = reward.tokenizer
    assert [
        tok.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in rows
    ] == [EXPECTED["single"], EXPECTED["multi"]]
    assert [oasst_format(p, r, EOS) for p, r in zip(prompts, responses)] == [
        EXPECTED["single"],
        EXPECTED["multi"],
    ]
    prompter, assistant, eos = (
        tok.convert_tokens_to_ids(t) for t in ("<|prompter|>", "<|assistant|>", EOS)
    )
    for row, (humans, assistants) in zip(
        rows, [(1, 1), (2, 2)]
    ):  # each tag is one token, every turn ends in EOS
        assert row.count(prompter) == humans and row.count(assistant) == assistants
        assert row.count(eos) == humans + assistants and row[-1] == eos


def test_the_logit_is_read_at_the_final_eos(oa_folder):
    reward = SequenceClassifierReward(str(oa_folder), formatter="oasst")
    prompts, responses = _pairs()
    prompts, responses = (
        prompts + ["\n\nHuman: hi\n\nAssistant:"],
        responses + ["Hello there, how can I help?"],
    )
    model, tok = reward.model, reward.tokenizer
    expected, naive = [], []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            ids = tok(oasst_format(p, r, EOS), return_tensors="pt")["input_ids"]
            hidden = model.gpt_neox(input_ids=ids).last_hidden_state
            expected.append(torch.sigmoid(model.score(hidden[0, -1])).item())
            naive.append(
                torch.sigmoid(model(input_ids=ids).logits[0, 0]).item()
            )  # pad = eos: HF reads one token early
    out = reward(prompts, responses)["classifier"]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert not np.allclose(naive, expected, atol=1e-3), (
        "the test cannot tell the final EOS from the token before"
    )
    assert ((out > 0) & (out < 1)).all()


def test_batched_scores_equal_one_by_one(oa_folder):
    prompts, responses = _pairs()
    prompts = prompts * 3 + ["\n\nHuman: Hi\n\nAssistant:"]
    responses = responses + [
        "Guitars are loud.",
        "No idea, sorry.",
        "tune",
        "each string",
        "Hello!",
    ]
    batched = SequenceClassifierReward(str(oa_folder), formatter="oasst", batch_size=4)(
        prompts, responses
    )
    single = SequenceClassifierReward(str(oa_folder), formatter="oasst", batch_size=1)(
        prompts, responses
    )
    np.testing.assert_allclose(batched["classifier"], single["classifier"], atol=1e-5)
    assert ((batched["total"] >= 0) & (batched["total"] <= 1)).all() and batched[
        "total"
    ].std() > 1e-4


def test_truncation_keeps_the_end_of_the_dialogue(oa_folder):
    reward = SequenceClassifierReward(str(oa_folder), formatter="oasst", max_length=16)
    seen = _capture_inputs(reward)
    prompts, responses = _pairs()
    reward(prompts[1:], responses[1:])
    (row,) = _rows(seen)
    full = reward.tokenizer(EXPECTED["multi"])["input_ids"]
    assert (
        len(full) > 16 and row == full[-16:]
    )  # the start of the dialogue is cut, the reply and EOS kept


def test_oasst_format_needs_the_tags_as_single_tokens(tmp_path):

    tokenizer = train_tokenizer(["plain text only, no tags"] * 20, vocab_size=300)
    model = GPTNeoXForSequenceClassification(
        GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=1,
        )
    )
    with pytest.raises(ValueError, match=r"splits <\|prompter\|>"):
        SequenceClassifierReward(model, tokenizer, formatter="oasst")
    with pytest.raises(ValueError, match="formatter must be"):
        SequenceClassifierReward(model, tokenizer, formatter="llama")


def test_hub_reward_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        SequenceClassifierReward("OpenAssistant/no-such-reward-model-for-tests", formatter="oasst")
    assert time.perf_counter() - start < 10


def test_pickle_weights_need_an_explicit_opt_in(oa_folder, tmp_path):
    pickled = tmp_path / "pickled-rm"
    shutil.copytree(oa_folder, pickled)
    model = AutoModelForSequenceClassification.from_pretrained(oa_folder)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # the OpenAssistant RMs' format
    with pytest.raises(OSError, match="no safetensors weights .* allow_pickle=True"):
        SequenceClassifierReward(str(pickled), formatter="oasst")
    prompts, responses = _pairs()
    loaded = SequenceClassifierReward(str(pickled), formatter="oasst", allow_pickle=True)(
        prompts, responses
    )
    reference = SequenceClassifierReward(str(oa_folder), formatter="oasst")(prompts, responses)
    np.testing.assert_allclose(loaded["total"], reference["total"], rtol=1e-6)
