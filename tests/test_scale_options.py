"""The options for pretrained, GPT-2-scale policies: LoRA adapters and the chat prompt format."""

import copy

import pytest
import torch

from alol_min.cache import config_inputs
from alol_min.lm.batching import encode_pairs, encode_prompts, prompt_frame, user_message
from alol_min.lm.loop import finish_training, prepare_for_training
from alol_min.lm.models import ModelConfig, make_policy, with_prompt_format
from alol_min.lm.reference import encode_split
from alol_min.lm.sft import SFTConfig, train_nll
from alol_min.run.config import preset
from alol_min.run.reproduce import task_folder
from alol_min.run.train import OfflineConfig

peft = pytest.importorskip("peft")

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_tokenizer(micro_policy):
    """The micro BPE with a ChatML template, its end-of-turn token as <eos>."""
    tokenizer = copy.deepcopy(micro_policy[1])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHAT
    return tokenizer


def test_lora_options_leave_cache_keys_alone_when_off():
    for cfg in (SFTConfig(), OfflineConfig()):
        assert not {k for k in config_inputs(cfg) if k.startswith("lora")}
    on = config_inputs(SFTConfig(lora_r=8))
    assert (on["lora_r"], on["lora_alpha"], on["lora_dropout"]) == (8, 16.0, 0.05)
    assert "prompt_format" not in config_inputs(ModelConfig.preset("tiny"))
    assert config_inputs(ModelConfig.preset("smollm2-135m"))["prompt_format"] == "chat"


def test_lora_trains_only_adapters_and_merges_them(micro_policy, chitchat_small):
    model, tokenizer, cfg = micro_policy
    model = copy.deepcopy(model)
    before = copy.deepcopy(model.state_dict())
    train = encode_split(tokenizer, chitchat_small["train"].select(range(64)), cfg)
    val = encode_split(tokenizer, chitchat_small["validation"].select(range(8)), cfg)
    sft = SFTConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=3, eval_pairs=8,
                    lora_r=4, lora_dropout=0.0)  # fmt: skip
    train_nll(model, train, val, sft, tokenizer.pad_token_id, progress=False)
    after = model.state_dict()
    assert after.keys() == before.keys(), "the adapters were not merged into the plain model"
    assert not any(isinstance(m, peft.tuners.lora.LoraLayer) for m in model.modules())
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all("attn" in k or "mlp" in k for k in moved), sorted(moved)
    assert not any(k.endswith(("wte.weight", "wpe.weight", "ln_f.weight")) for k in moved)


def test_lora_starts_at_pi_ref(micro_policy):
    model, tokenizer, _ = micro_policy
    cfg = SFTConfig(lora_r=4)
    ids = tokenizer(["hello there friend"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        wrapped = prepare_for_training(copy.deepcopy(model), cfg).eval()
        torch.testing.assert_close(wrapped(input_ids=ids).logits, expected)  # B = 0 at the start
        trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        torch.testing.assert_close(finish_training(wrapped, cfg)(input_ids=ids).logits, expected)


def test_plain_format_joins_with_eos(micro_policy):
    _, tokenizer, _ = micro_policy
    assert prompt_frame(tokenizer) == ([], [tokenizer.eos_token_id])
    enc = encode_pairs(tokenizer, ["hi there"], ["hello"], 24, 24)
    p = tokenizer("hi there", add_special_tokens=False)["input_ids"]
    r = tokenizer("hello", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    assert enc.input_ids[0] == p + [eos] + r + [eos] and enc.response_start[0] == len(p) + 1


def test_chat_format_frames_the_prompt_and_truncates_only_it(chat_tokenizer):
    tok = chat_tokenizer
    before, after = prompt_frame(tok)
    start, end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert before[0] == start and after[0] == end and start in after  # ...<|im_end|>\n<|im_start|>
    prompt = "one two three four five six seven eight nine ten " * 3
    enc = encode_pairs(tok, [prompt, "hi"], ["fine thanks", "hello"], 6, 24)
    p = tok(prompt, add_special_tokens=False)["input_ids"][-6:]
    r = tok("fine thanks", add_special_tokens=False)["input_ids"]
    assert enc.input_ids[0] == before + p + after + r + [end]
    assert enc.response_start[0] == len(before) + 6 + len(after)
    assert enc.truncated == {"prompts_truncated": 1, "responses_truncated": 0}
    assert encode_prompts(tok, [prompt, "hi"], 6) == [enc.prompt_ids(0), enc.prompt_ids(1)]
    text = tok.decode(enc.prompt_ids(1))
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")


def test_prompt_format_is_set_on_the_tokenizer(micro_policy, chat_tokenizer):
    model = micro_policy[0]
    plain = ModelConfig.preset("micro")
    _, tok = with_prompt_format(model, copy.deepcopy(chat_tokenizer), plain)
    assert tok.chat_template is None  # "plain" drops an instruct model's template
    chat = ModelConfig(name="micro", prompt_format="chat")
    assert with_prompt_format(model, chat_tokenizer, chat)[1].chat_template == CHAT
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        with_prompt_format(model, copy.deepcopy(micro_policy[1]), chat)
    with pytest.raises(ValueError, match="prompt_format must be"):
        make_policy(ModelConfig(name="micro", prompt_format="chatml"), ["a b c"])


def test_a_pretrained_models_runs_get_their_own_folder():
    assert task_folder(preset("default")) == "chitchat"
    assert task_folder(preset("gpt2-scale")) == "chitchat-smollm2-135m"
    low = preset("gpt2-scale")
    low.pool = "low-rated"
    assert task_folder(low) == "chitchat-low-rated-smollm2-135m"


def test_an_hh_dialogue_becomes_one_user_message(chat_tokenizer, micro_policy):
    single = "\n\nHuman: What is a novel?\n\nAssistant:"
    multi = (
        "\n\nHuman: Hello?\n\nAssistant: Of course.\n\nHuman: How do I bake bread?\n\nAssistant:"
    )
    assert user_message(single) == "What is a novel?"
    assert (
        user_message(multi) == "Human: Hello?\nAssistant: Of course.\nHuman: How do I bake bread?"
    )
    assert user_message("just a turn of chitchat") == "just a turn of chitchat"
    assert encode_prompts(chat_tokenizer, [single], 24) == encode_prompts(
        chat_tokenizer, ["What is a novel?"], 24
    )
    plain = micro_policy[1]  # no chat template: the HH text is read as it is
    assert encode_prompts(plain, [single], 24) != encode_prompts(plain, ["What is a novel?"], 24)
