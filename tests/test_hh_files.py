"""The HH-RLHF loader on bad files: every line is kept or counted with its file:line, a file that is
not what its name says is a one-line error, and nothing is read twice."""

import gzip
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alol_min.tasks.base import DataError
from alol_min.tasks.hh_files import GZIP_MAGIC
from alol_min.tasks.hh_rlhf import load_hh_rlhf, load_hh_splits


def _row(i: int, **extra) -> dict:
    prompt = f"\n\nHuman: Question number {i}?"
    return {
        "chosen": f"{prompt}\n\nAssistant: Answer {i}.",
        "rejected": f"{prompt}\n\nAssistant: No.",
        **extra,
    }


def _lines(rows) -> bytes:
    return b"".join((json.dumps(r).encode() if isinstance(r, dict) else r) + b"\n" for r in rows)


def test_two_files_for_one_split_are_an_error_naming_both(tmp_path):
    data = _lines(_row(i) for i in range(5))
    (tmp_path / "train.jsonl").write_bytes(data)
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(data))  # what `gunzip -k` leaves
    with pytest.raises(
        DataError, match=r"train\.jsonl and .*train\.jsonl\.gz: two files for one split"
    ):
        load_hh_rlhf(tmp_path)


def test_a_truncated_gzip_keeps_the_rows_before_the_cut(tmp_path):
    packed = gzip.compress(_lines(_row(i) for i in range(400)))
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    data, report = load_hh_rlhf(path)
    reason = "gzip stream ends early or is damaged: rows before it kept"
    assert 0 < len(data) < 400 and report.dropped[reason] == 1
    assert report.where[reason] == [f"{path}:{len(data) + 1}"]  # the first line not read whole
    assert list(data["source_index"]) == list(range(len(data)))  # every row before the cut


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: caf\xe9", "rejected": "x"}', "line is not UTF-8"),
        (b'{"chosen": "\\n\\nHuman: a\\ud800\\n\\nAssistant: b", "rejected": "x"}',
         "text holds a lone surrogate (e.g. a JSON \\ud800 escape)"),
        (b"{not json", "invalid JSON line"),
        (b"[" * 100_000, "invalid JSON line"),  # nested too deep for the parser
        (b'{"n": ' + b"9" * 5000 + b"}", "invalid JSON line"),  # an integer past Python's digit limit
    ],
)  # fmt: skip
def test_a_bad_line_is_counted_with_its_place_and_the_rest_is_kept(tmp_path, line, reason):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines([_row(0), _row(1)]) + line + b"\n" + _lines([_row(3)]))
    data, report = load_hh_rlhf(path)
    assert (
        len(data) == 3 and report.dropped == {reason: 1} and report.where[reason] == [f"{path}:3"]
    )


def test_a_file_that_is_not_what_its_name_says_is_an_error(tmp_path):
    hidden = tmp_path / "train.jsonl"
    hidden.write_bytes(gzip.compress(_lines([_row(0)])))
    with pytest.raises(
        DataError, match=r"train\.jsonl: a gzip file whose name does not end in \.gz"
    ):
        load_hh_rlhf(hidden)
    fake = tmp_path / "other.jsonl.gz"
    fake.write_bytes(_lines([_row(0)]))
    with pytest.raises(DataError, match=r"other\.jsonl\.gz: named \.gz but it is not a gzip file"):
        load_hh_rlhf(fake)


def test_an_extra_field_that_changes_type_drops_that_row_only(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines([_row(0, topic="a"), _row(1, topic=7), _row(2, topic="c"), _row(3)]))
    data, report = load_hh_rlhf(path)
    assert list(data["topic"]) == ["a", "c", None]
    assert report.dropped == {"an extra field changes type from row to row": 1}


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _lines([_row(0), _row(1)]))
    data, report = load_hh_rlhf(path)
    assert len(data) == 2 and not report.dropped


def test_identical_replies_and_embedded_turns_are_counted_and_dropped(tmp_path):
    same = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello",
    }
    merged = {
        "chosen": "\n\nHuman: hi\n\nAssistant: Human: what is up?",
        "rejected": "\n\nHuman: hi\n\nAssistant: yo",
    }
    inside = {
        "chosen": "\n\nHuman: hi\n\nAssistant: sure.\nHuman: thanks",
        "rejected": "\n\nHuman: hi\n\nAssistant: no",
    }
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines([_row(0), same, merged, inside]))
    data, report = load_hh_rlhf(path)
    assert len(data) == 1
    assert report.dropped == {
        "chosen and rejected are the same": 1,
        "a response holds another turn ('Human:' / 'Assistant:' without the blank line)": 2,
    }


def test_prompts_shared_by_two_splits_are_reported(tmp_path):
    rows = [_row(i % 40) for i in range(120)]  # every prompt three times
    (tmp_path / "train.jsonl").write_bytes(_lines(rows))
    (tmp_path / "test.jsonl").write_bytes(_lines([_row(0), _row(1), _row(999)]))
    splits, report = load_hh_splits(tmp_path, n_validation=10, n_test=3)
    assert report.notes["test prompts also in train or validation"] == 2
    assert 0 < report.notes["validation prompts also in train"] <= 10
    assert "test prompts also in train or validation: 2" in str(report)


TEXT = st.text(alphabet=string.printable + "éü€\u2028", max_size=30)
TURN = st.builds(
    lambda role, text: f"\n\n{role}: {text}", st.sampled_from(["Human", "Assistant"]), TEXT
)
DIALOGUE = st.lists(TURN, min_size=0, max_size=4).map("".join)
ROW = st.one_of(
    st.builds(lambda a, b, c: {"chosen": a + b, "rejected": a + c}, DIALOGUE, DIALOGUE, DIALOGUE),
    st.fixed_dictionaries(
        {"chosen": DIALOGUE, "rejected": st.one_of(DIALOGUE, st.integers(), st.none())}
    ),
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.integers(), TEXT, st.lists(st.integers(), max_size=2))
    ),
)
LINE = st.one_of(
    ROW.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(LINE, max_size=25))
def test_every_line_is_kept_or_counted_and_nothing_raises(tmp_path, lines):
    path = tmp_path / "random.jsonl"
    content = b"\n".join(lines) + b"\n"  # len(lines) lines
    path.write_bytes(content)
    if content.startswith(GZIP_MAGIC):  # looks like gzip: a one-line error naming the file
        with pytest.raises(DataError, match="a gzip file whose name does not end in .gz"):
            load_hh_rlhf(path)
        return
    data, report = load_hh_rlhf(path)
    skipped = report.notes.get("blank lines skipped", 0)
    assert len(data) + sum(report.dropped.values()) + skipped == content.count(b"\n")


def test_drops_in_the_test_split_keep_their_place_and_max_rows_is_reported(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(_lines([_row(i) for i in range(30)] + [b"", b"{bad"]))
    (tmp_path / "test.jsonl").write_bytes(_lines([_row(100), b"{bad", _row(101)]))
    _, report = load_hh_splits(tmp_path, n_validation=5, n_test=2)
    assert report.where["invalid JSON line"] == [
        f"{tmp_path / 'train.jsonl'}:32",
        f"{tmp_path / 'test.jsonl'}:2",
    ]
    assert report.notes["blank lines skipped"] == 1
    _, cut = load_hh_rlhf(tmp_path / "train.jsonl", max_rows=10)
    assert cut.notes["files cut at --max-rows"] == 1
