"""OpenAssistant's GPTNeoXRewardModel, re-implemented (alol_min.oasst_rm), on a tiny random stand-in.

The stand-in is saved in the hub checkpoints' format (model_type "gpt_neox_reward_model",
weights gpt_neox.* and out_proj.*) and loaded by folder through SequenceClassifierReward with no
remote code. Its scores are checked against sigmoid(out_proj(h)) computed by hand from a plain
GPTNeoXModel holding the same backbone weights.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXModel,
)

from alol_min.lm.hh_format import oasst_format
from alol_min.lm.models import train_tokenizer
from alol_min.lm.oasst_rm import GPTNeoXRewardModel, GPTNeoXRewardModelConfig
from alol_min.rewards import SequenceClassifierReward

EOS = "<|endoftext|>"
SHAPE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    initializer_range=0.5,
)
PROMPTS = [
    "\n\nHuman: What is a roux?\n\nAssistant:",
    "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?\n\nAssistant:",
    "\n\nHuman: hi\n\nAssistant:",
]
RESPONSES = [
    "A roux is flour cooked in butter.",
    "Use a clip-on tuner. Then tune each string.",
    "Hello!",
]


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A saved tiny OpenAssistant-style reward model and a tokenizer with <|prompter|>, <|assistant|>."""

    folder = tmp_path_factory.mktemp("oasst-rm")
    tokenizer = train_tokenizer([p + r for p, r in zip(PROMPTS, RESPONSES)] * 8, vocab_size=300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|prompter|>", "<|assistant|>"]})
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPTNeoXRewardModelConfig(
        vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, **SHAPE
    )
    GPTNeoXRewardModel(config).save_pretrained(folder)
    return folder


def _variant(rm_folder, tmp_path, **config_changes):
    """A copy of the saved model with config.json entries changed (None deletes the entry)."""
    folder = tmp_path / "rm"
    shutil.copytree(rm_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    config = {key: value for key, value in config.items() if value is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _by_hand(folder, pooling="last"):
    """sigmoid(out_proj(pooled h)) per (prompt, response), each scored alone, from a plain GPTNeoXModel."""

    weights = load_file(folder / "model.safetensors")
    tok = AutoTokenizer.from_pretrained(folder)
    backbone = GPTNeoXModel(GPTNeoXConfig(vocab_size=len(tok), **SHAPE)).eval()
    backbone.load_state_dict(
        {k.removeprefix("gpt_neox."): v for k, v in weights.items() if k.startswith("gpt_neox.")}
    )
    w, b = weights["out_proj.weight"], weights["out_proj.bias"]
    out = []
    with torch.no_grad():
        for p, r in zip(PROMPTS, RESPONSES):
            ids = tok(oasst_format(p, r, EOS), return_tensors="pt")["input_ids"]
            assert ids[0, -1] == tok.eos_token_id
            h = backbone(input_ids=ids).last_hidden_state[0]
            pooled = {"last": h[-1], "mean": h.mean(0), "before_eos": h[-2]}[pooling]
            out.append(torch.sigmoid(pooled @ w[0] + b[0]).item())
    return np.array(out)


def test_saved_in_the_hub_format_and_loaded_without_remote_code(rm_folder):

    config = json.loads((rm_folder / "config.json").read_text())
    assert config["model_type"] == "gpt_neox_reward_model" and config["architectures"] == [
        "GPTNeoXRewardModel"
    ]
    assert config["pooling"] == "last"
    keys = set(load_file(rm_folder / "model.safetensors"))
    assert {
        "out_proj.weight",
        "out_proj.bias",
        "gpt_neox.embed_in.weight",
        "gpt_neox.final_layer_norm.weight",
        "gpt_neox.layers.1.attention.query_key_value.weight",
    } <= keys
    assert all(k.startswith("gpt_neox.") for k in keys - {"out_proj.weight", "out_proj.bias"})
    model = AutoModelForSequenceClassification.from_pretrained(rm_folder, trust_remote_code=False)
    assert type(model).__name__ == "GPTNeoXRewardModel" and model.config.num_labels == 1


def test_score_is_sigmoid_of_out_proj_at_the_last_real_token(rm_folder):
    out = SequenceClassifierReward(str(rm_folder), formatter="oasst", batch_size=3)(
        PROMPTS, RESPONSES
    )["classifier"]
    np.testing.assert_allclose(out, _by_hand(rm_folder), atol=1e-5)
    assert not np.allclose(out, _by_hand(rm_folder, "before_eos"), atol=1e-3), (
        "cannot tell EOS from the token before"
    )
    assert not np.allclose(out, _by_hand(rm_folder, "mean"), atol=1e-3), (
        "cannot tell last from mean pooling"
    )


def test_scores_do_not_depend_on_the_batch(rm_folder):
    prompts, responses = (
        PROMPTS * 3,
        RESPONSES + RESPONSES[::-1] + ["Guitars are loud.", "No idea.", "tune"],
    )
    batched = SequenceClassifierReward(str(rm_folder), formatter="oasst", batch_size=4)(
        prompts, responses
    )
    single = SequenceClassifierReward(str(rm_folder), formatter="oasst", batch_size=1)(
        prompts, responses
    )
    np.testing.assert_allclose(batched["classifier"], single["classifier"], atol=1e-5)
    assert batched["classifier"].std() > 1e-3


def test_mean_pooling(rm_folder, tmp_path):
    folder = _variant(rm_folder, tmp_path, pooling="mean")
    out = SequenceClassifierReward(str(folder), formatter="oasst", batch_size=3)(
        PROMPTS, RESPONSES
    )["classifier"]
    np.testing.assert_allclose(out, _by_hand(folder, "mean"), atol=1e-5)


def test_hub_style_config_defaults_to_last_pooling_and_one_label(rm_folder, tmp_path):
    # hub configs have no id2label and the legacy rotary keys; upstream treats a missing pooling as "last"
    folder = _variant(
        rm_folder,
        tmp_path,
        pooling=None,
        id2label=None,
        label2id=None,
        rotary_pct=0.25,
        rotary_emb_base=10000,
    )
    reward = SequenceClassifierReward(str(folder), formatter="oasst", batch_size=3)
    assert reward.model.config.pooling == "last" and reward.model.config.num_labels == 1
    np.testing.assert_allclose(
        reward(PROMPTS, RESPONSES)["classifier"], _by_hand(rm_folder), atol=1e-5
    )


def test_legacy_pytorch_bin_checkpoint_loads(rm_folder, tmp_path):
    # the hub repos ship pytorch_model.bin, with attention buffers that current GPT-NeoX no longer has
    folder = _variant(rm_folder, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    weights["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(4)
    torch.save(weights, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="allow_pickle=True"):  # pickle weights only on request
        SequenceClassifierReward(str(folder), formatter="oasst")
    out = SequenceClassifierReward(str(folder), formatter="oasst", batch_size=3, allow_pickle=True)(
        PROMPTS, RESPONSES
    )["classifier"]
    np.testing.assert_allclose(out, _by_hand(rm_folder), atol=1e-5)


def test_unknown_pooling_is_a_clear_error(rm_folder, tmp_path):
    folder = _variant(rm_folder, tmp_path, pooling="max")
    with pytest.raises(ValueError, match=r"unknown pooling 'max'.*\('last', 'mean'\)"):
        SequenceClassifierReward(str(folder), formatter="oasst")
