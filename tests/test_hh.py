import gzip
import json
import time

import numpy as np
import pytest

from alol_min.lm.hh_format import PAPER_SYSTEM_LINE, format_prompt, oasst_format, render, turns
from alol_min.lm.hub import HubUnavailableError
from alol_min.run.evaluate import score_responses, scores_by_group
from alol_min.tasks.hh_rlhf import load_hh_rlhf, load_hh_splits

SINGLE = {
    "chosen": "\n\nHuman: What is a roux?\n\nAssistant: A roux is flour cooked in butter.",
    "rejected": "\n\nHuman: What is a roux?\n\nAssistant: No idea, sorry.",
}
MULTI = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?"
    "\n\nAssistant: Use a clip-on tuner.\n\nThen tune each string.  ",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?"
    "\n\nAssistant: Guitars are loud.",
}
MULTI_PROMPT = "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I tune a guitar?\n\nAssistant:"
BAD_ROWS = {  # reason -> a row (or raw line) that must be dropped for it
    "response ends with ':'": {
        "chosen": "\n\nHuman: Ideas?\n\nAssistant: Here are some:",
        "rejected": "\n\nHuman: Ideas?\n\nAssistant: None.",
    },
    "no final assistant turn": {
        "chosen": "\n\nHuman: hello",
        "rejected": "\n\nHuman: hello\n\nAssistant: hi",
    },
    "chosen and rejected prompts differ": {
        "chosen": "\n\nHuman: a\n\nAssistant: b",
        "rejected": "\n\nHuman: c\n\nAssistant: d",
    },
    "empty final response": {
        "chosen": "\n\nHuman: hi\n\nAssistant:",
        "rejected": "\n\nHuman: hi\n\nAssistant: yo",
    },
    "missing field 'rejected'": {"chosen": "\n\nHuman: hi\n\nAssistant: yo"},
    "field 'chosen' is not a string": {"chosen": 3, "rejected": "\n\nHuman: hi\n\nAssistant: yo"},
    "row is not a JSON object": [1, 2],
    "text before the first Human/Assistant turn": {
        "chosen": "Preamble\n\nHuman: hi\n\nAssistant: yo",
        "rejected": "\n\nHuman: hi\n\nAssistant: yo",
    },
}


def write_jsonl(path, rows, raw_lines=()):
    text = "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw_lines)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", ["train.jsonl", "train.jsonl.gz"])
def test_single_and_multi_turn_parse_to_exact_strings(tmp_path, name):
    path = tmp_path / name
    write_jsonl(path, [SINGLE, MULTI, {**SINGLE, "topic": "cooking"}])
    data, report = load_hh_rlhf(path)
    assert len(data) == 3 and not report.dropped
    assert data[0]["prompt"] == "\n\nHuman: What is a roux?\n\nAssistant:"
    assert data[0]["chosen"] == "A roux is flour cooked in butter."
    assert data[0]["rejected"] == "No idea, sorry."
    assert data[1]["prompt"] == MULTI_PROMPT
    assert (
        data[1]["chosen"] == "Use a clip-on tuner.\n\nThen tune each string."
    )  # paragraphs kept, stripped
    assert data[1]["rejected"] == "Guitars are loud."
    assert (
        data["n_turns"] == [1, 2, 1]
        and data["source_index"] == [0, 1, 2]
        and data["subset"] == ["", "", ""]
    )
    assert data["response"] == data["chosen"]
    assert data["topic"] == [None, None, "cooking"]  # unknown keys pass through as columns


def test_folder_with_two_subsets(tmp_path):
    (tmp_path / "harmless-base").mkdir()
    (tmp_path / "helpful-base").mkdir()
    write_jsonl(tmp_path / "harmless-base" / "train.jsonl.gz", [SINGLE, SINGLE])
    write_jsonl(tmp_path / "helpful-base" / "train.jsonl", [MULTI])
    write_jsonl(tmp_path / "helpful-base" / "test.jsonl", [SINGLE])
    data, report = load_hh_rlhf(tmp_path)
    assert data["subset"] == ["harmless-base", "harmless-base", "helpful-base"]
    assert data[2]["prompt"] == MULTI_PROMPT
    assert sorted(report.kept.values()) == [1, 2]
    helpful, _ = load_hh_rlhf(tmp_path, subsets=["helpful-base"])
    assert helpful["subset"] == ["helpful-base"]
    test, _ = load_hh_rlhf(tmp_path, split="test")
    assert test["chosen"] == ["A roux is flour cooked in butter."]
    with pytest.raises(FileNotFoundError, match="red-team"):
        load_hh_rlhf(tmp_path, subsets=["red-team"])
    with pytest.raises(FileNotFoundError):
        load_hh_rlhf(tmp_path, split="validation")


def test_every_malformed_case_is_counted_with_its_reason_and_place(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(
        path,
        [SINGLE, *BAD_ROWS.values(), MULTI],
        raw_lines=['{"chosen": "oops', "", "not json at all"],
    )
    data, report = load_hh_rlhf(path)
    assert len(data) == 2 and data["source_index"] == [0, len(BAD_ROWS) + 1]
    expected = {reason: 1 for reason in BAD_ROWS}
    expected["invalid JSON line"] = 2  # the blank line is not a row
    assert dict(report.dropped) == expected
    first_bad_json = len(BAD_ROWS) + 3  # 1-based line number of '{"chosen": "oops'
    assert report.where["invalid JSON line"] == [
        f"{path}:{first_bad_json}",
        f"{path}:{first_bad_json + 2}",
    ]
    assert report.where["empty final response"] == [
        f"{path}:{list(BAD_ROWS).index('empty final response') + 2}"
    ]


def test_colon_endings_kept_when_cleaning_is_off(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [SINGLE, BAD_ROWS["response ends with ':'"]])
    _, report = load_hh_rlhf(path)
    assert report.dropped == {"response ends with ':'": 1}
    data, report = load_hh_rlhf(path, drop_colon_endings=False)
    assert len(data) == 2 and data[1]["chosen"] == "Here are some:" and not report.dropped


def test_max_rows_reads_only_the_first_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [SINGLE, MULTI, SINGLE])
    data, _ = load_hh_rlhf(path, max_rows=2)
    assert data["source_index"] == [0, 1]


def test_turns_parser_and_round_trip():
    assert turns(MULTI["rejected"]) == [
        ("human", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("human", "How do I tune a guitar?"),
        ("assistant", "Guitars are loud."),
    ]
    assert turns("Human: no leading blank line\n\nAssistant: ok") == [
        ("human", "no leading blank line"),
        ("assistant", "ok"),
    ]
    assert render(turns(MULTI["rejected"])) == MULTI["rejected"]
    with pytest.raises(ValueError, match="before the first"):
        turns("hello there")


def test_format_prompt_styles_and_oasst_format():
    assert PAPER_SYSTEM_LINE == (
        "A chat between a curious human and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions.\n"
    )
    assert format_prompt(MULTI_PROMPT, "paper") == (
        PAPER_SYSTEM_LINE + "### Human: Hi ### Assistant: Hello! How can I help? "
        "### Human: How do I tune a guitar? ### Assistant:"
    )
    assert format_prompt(MULTI_PROMPT, "plain") == (
        "Human: Hi\nAssistant: Hello! How can I help?\nHuman: How do I tune a guitar?\nAssistant:"
    )
    assert format_prompt(MULTI_PROMPT, "hh") == MULTI_PROMPT
    assert oasst_format(MULTI_PROMPT, " Use a tuner. ", "</s>") == (
        "<|prompter|>Hi</s><|assistant|>Hello! How can I help?</s>"
        "<|prompter|>How do I tune a guitar?</s><|assistant|>Use a tuner.</s>"
    )
    with pytest.raises(ValueError, match="style"):
        format_prompt(MULTI_PROMPT, "chatml")


def test_hub_name_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_hh_rlhf("Anthropic/hh-rlhf", subsets=["harmless-base"])
    assert time.perf_counter() - start < 5
    with pytest.raises(FileNotFoundError):
        load_hh_rlhf("/no/such/folder/train.jsonl")


def _pair(i: int, subset: str) -> dict:
    prompt = f"\n\nHuman: {subset} question {i}?\n\nAssistant:"
    return {"chosen": prompt + f" Answer {i}.", "rejected": prompt + f" No {i}."}


def test_test_split_is_sampled_across_subsets_and_scored_per_subset(tmp_path):
    """A source's own test split is sampled (seeded) across its subsets, never cut to its first
    rows (one subset's); scores_by_group gives each subset's total."""
    for subset in ("harmless-base", "helpful-base"):
        (tmp_path / subset).mkdir()
        write_jsonl(tmp_path / subset / "train.jsonl", [_pair(i, subset) for i in range(40)])
        write_jsonl(tmp_path / subset / "test.jsonl", [_pair(100 + i, subset) for i in range(30)])
    splits, _ = load_hh_splits(tmp_path, n_validation=10, n_test=20, seed=0)
    test_subsets = splits["test"]["subset"]
    assert len(test_subsets) == 20 and set(test_subsets) == {"harmless-base", "helpful-base"}
    assert set(splits["validation"]["subset"]) == {"harmless-base", "helpful-base"}
    again, _ = load_hh_splits(tmp_path, n_validation=10, n_test=20, seed=0)
    assert again["test"]["prompt"] == splits["test"]["prompt"]  # seeded
    other, _ = load_hh_splits(tmp_path, n_validation=10, n_test=20, seed=1)
    assert other["test"]["prompt"] != splits["test"]["prompt"]

    def reward(prompts, responses):
        return {"total": np.array([1.0 if "harmless" in p else 0.0 for p in prompts])}

    prompts = list(splits["test"]["prompt"])
    calls = []

    def counted(prompts, responses):
        calls.append(len(prompts))
        return reward(prompts, responses)

    scores = score_responses(prompts, ["r"] * len(prompts), counted, groups=test_subsets)
    assert scores["harmless-base/total"] == 1.0 and scores["helpful-base/total"] == 0.0
    assert scores["harmless-base/n"] + scores["helpful-base/n"] == 20
    assert calls == [20]  # one reward call scores the whole set and every subset
    assert scores_by_group(np.zeros(20), ["one"] * 20) == {}
