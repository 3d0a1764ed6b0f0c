import json

from alol_min.models import ModelConfig
from alol_min.reference import encode_split, reference_policy
from alol_min.training import SFTConfig, reply_perplexity, train_nll


def test_sft_loss_decreases_on_micro(micro_policy, chitchat_small, tmp_path):
    import copy
    model, tokenizer, cfg = micro_policy
    model = copy.deepcopy(model)
    train = encode_split(tokenizer, chitchat_small["train"], cfg)
    val = encode_split(tokenizer, chitchat_small["validation"], cfg)
    before = reply_perplexity(model, val, tokenizer.pad_token_id)
    sft = SFTConfig(steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=15, eval_pairs=100)
    log = train_nll(model, train, val, sft, tokenizer.pad_token_id, run_dir=tmp_path, progress=False)
    first = sum(r["token_nll"] for r in log[:5]) / 5
    last = sum(r["token_nll"] for r in log[-5:]) / 5
    assert last < 0.9 * first
    assert log[-1]["val_reply_ppl"] < 0.5 * before
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"step", "loss", "lr", "examples_seen"} <= set(rows[0])
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 30


def test_reference_policy_is_cached_and_keyed(chitchat_small, capsys):
    cfg = ModelConfig.preset("micro")
    sft = SFTConfig(steps=3, batch_size=8, eval_every=3, eval_pairs=20)
    _, _, folder = reference_policy(chitchat_small, cfg, sft, progress=False)
    assert "building" in capsys.readouterr().out
    _, _, again = reference_policy(chitchat_small, cfg, sft, progress=False)
    assert again == folder and "reusing" in capsys.readouterr().out
    _, _, other = reference_policy(chitchat_small, cfg, SFTConfig(steps=3, batch_size=8, eval_every=3,
                                                                   eval_pairs=20, seed=1), progress=False)
    assert other != folder
