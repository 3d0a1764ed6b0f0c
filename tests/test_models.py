import time

import pytest
import torch
from transformers import AutoTokenizer

from alol_min.lm.batching import (
    collate,
    encode_pairs,
    response_logprobs,
    scatter_ref_logprobs,
    token_logprobs,
)
from alol_min.lm.hub import HubUnavailableError
from alol_min.lm.models import ModelConfig, load_policy, load_pretrained, save_policy


def test_tokenizer_round_trip(micro_policy, tmp_path):
    _, tokenizer, _ = micro_policy
    text = "Hey, how's it going? I'm great :) 123 émoji 🎉"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids


def test_save_load_gives_identical_logits(micro_policy, tmp_path):
    model, tokenizer, _ = micro_policy
    save_policy(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, _ = load_policy(tmp_path)
    x = torch.randint(0, len(tokenizer), (3, 17))
    model.eval()
    assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)


def test_encode_truncates_and_reports(micro_policy):
    _, tokenizer, cfg = micro_policy
    long_prompt = "word " * 200
    enc = encode_pairs(
        tokenizer,
        [long_prompt, "hi"],
        ["ok " * 100, "yes"],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    assert enc.truncated == {"prompts_truncated": 1, "responses_truncated": 1}
    assert all(len(ids) <= cfg.n_positions for ids in enc.input_ids)
    assert enc.input_ids[1][enc.response_start[1] - 1] == tokenizer.eos_token_id


def test_response_too_long_for_context_is_a_config_error():
    cfg = ModelConfig.preset("micro")
    cfg.max_prompt_tokens = 60
    with pytest.raises(ValueError, match="exceed the model's context"):
        cfg.check_lengths()
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("gpt5")


def test_response_mask_covers_exactly_the_response(micro_policy):
    model, tokenizer, cfg = micro_policy
    enc = encode_pairs(
        tokenizer,
        ["hello there", "a much longer prompt than the other one"],
        ["hi", "fine thanks"],
        cfg.max_prompt_tokens,
        cfg.max_response_tokens,
    )
    batch = collate(enc, [0, 1], tokenizer.pad_token_id)
    for b in range(2):
        n_targets = len(enc.input_ids[b]) - enc.response_start[b]
        assert int(batch["response_mask"][b].sum()) == n_targets
    logp, mask = response_logprobs(model, batch)
    with torch.no_grad():  # same as the full softmax over every position, then masked
        full = (
            token_logprobs(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                batch["input_ids"],
            )
            * mask
        )
    assert torch.allclose(logp, full, atol=1e-5)
    assert logp.shape == mask.shape and (logp[mask == 0] == 0).all() and (logp[mask == 1] < 0).all()
    # padding does not change a pair's log-probs (causal model, right padding)
    alone, _ = response_logprobs(model, collate(enc, [0], tokenizer.pad_token_id))
    assert torch.allclose(alone.sum(), logp[0].sum(), atol=1e-5)
    # cached per-example log-probs land back on the same grid
    per_example = [logp[b][mask[b].bool()] for b in range(2)]
    assert torch.equal(scatter_ref_logprobs(per_example, mask), logp)


# load_pretrained: a local folder, 'smollm2-135m' (tests/test_smollm2.py), or a hub name


def test_load_pretrained_reads_a_local_folder(micro_policy, tmp_path):

    model, tokenizer, _ = micro_policy
    save_policy(model, tokenizer, tmp_path / "policy")
    loaded, loaded_tokenizer = load_pretrained(str(tmp_path / "policy"))
    x = torch.randint(0, len(tokenizer), (2, 9))
    model.eval()
    assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert loaded_tokenizer.pad_token == tokenizer.pad_token
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pretrained(str(tmp_path / "not" / "there"))
    with pytest.raises(ValueError, match="is a file"):
        load_pretrained(str(tmp_path / "policy" / "config.json"))


@pytest.mark.parametrize("offline", [True, False])
def test_load_pretrained_hub_name_without_the_hub_fails_fast_and_clearly(monkeypatch, offline):

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        reason = "HF_HUB_OFFLINE"
    else:  # hub allowed, but unreachable: port 9 on localhost refuses at once
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        reason = "cannot be reached"
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=reason) as error:
        load_pretrained("nobody/no-such-model-for-tests")
    assert time.perf_counter() - start < 10
    assert "not in the local Hugging Face cache" in str(error.value)
    assert isinstance(error.value, OSError)  # make_policy's gpt2 fallback catches it
