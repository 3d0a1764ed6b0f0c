import pytest

from alol_min.tasks.base import DataReport
from alol_min.tasks.chitchat import ChitchatConfig, load_chitchat, validate_pairs


def test_split_is_deterministic_and_by_conversation():
    cfg = ChitchatConfig(max_train=2000, max_validation=300, max_test=300, seed=3)
    a, _ = load_chitchat(cfg)
    b, _ = load_chitchat(cfg)
    for split in ("train", "validation", "test"):
        assert a[split]["prompt"] == b[split]["prompt"]
        assert a[split]["response"] == b[split]["response"]
    conv = {s: set(a[s]["conversation_id"]) for s in a}
    assert not conv["train"] & conv["validation"]
    assert not conv["train"] & conv["test"]
    assert not conv["validation"] & conv["test"]


def test_full_split_has_no_leakage_and_changes_with_seed():
    full, report = load_chitchat(ChitchatConfig(max_validation=None, max_test=None))
    conv = {s: set(full[s]["conversation_id"]) for s in full}
    assert sum(len(c) for c in conv.values()) == len(set().union(*conv.values()))
    assert report.kept["train"] > 100_000 and sum(report.dropped.values()) > 0
    other, _ = load_chitchat(ChitchatConfig(max_validation=None, max_test=None, seed=1))
    assert set(other["test"]["conversation_id"]) != conv["test"]


def test_columns_and_ratings(chitchat_small):
    train = chitchat_small["train"]
    assert {
        "prompt",
        "response",
        "conversation_id",
        "turn",
        "witty",
        "upbeat",
        "interesting",
        "rating",
    } <= set(train.column_names)
    rated = [r for r in train["rating"] if r is not None]
    assert len(rated) > 0.8 * len(train)
    assert all(1 <= r <= 10 for r in rated)
    # evaluation splits hold one pair per prompt text
    assert len(set(chitchat_small["validation"]["prompt"])) == len(chitchat_small["validation"])


def test_context_turns_prepends_history():
    plain, _ = load_chitchat(ChitchatConfig(max_train=500, context_turns=0))
    ctx, _ = load_chitchat(ChitchatConfig(max_train=500, context_turns=1))
    assert sum("\n" in p for p in ctx["train"]["prompt"]) > 0.5 * len(ctx["train"])
    assert sum("\n" in p for p in plain["train"]["prompt"]) < 0.05 * len(plain["train"])


@pytest.mark.parametrize(
    "row,message",
    [
        ({"response": "hi"}, "row 1: missing field 'prompt'"),
        ({"prompt": "hi", "response": ""}, "row 1: field 'response' is empty"),
        ({"prompt": "hi", "response": 3}, "row 1: field 'response' is int, expected str"),
        ({"prompt": None, "response": "x"}, "row 1: field 'prompt' is NoneType, expected str"),
    ],
)
def test_bad_rows_raise_naming_row_and_field(row, message):
    rows = [{"prompt": "a", "response": "b"}, row]
    with pytest.raises(ValueError, match=message):
        validate_pairs(rows, source="t")


def test_bad_rows_dropped_are_counted():
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": " "}, {"response": "x"}]
    report = DataReport()
    kept = validate_pairs(rows, on_bad="drop", report=report)
    assert len(kept) == 1
    assert report.dropped == {"field 'response' is empty": 1, "missing field 'prompt'": 1}
    with pytest.raises(ValueError, match="needs a DataReport"):
        validate_pairs(rows, on_bad="drop")
