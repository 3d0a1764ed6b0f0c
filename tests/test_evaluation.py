import pytest

from alol_min.run.evaluate import distinct_n


def test_distinct_n_by_hand():
    scores = distinct_n(["a b a b", "A b c", "x"])
    # unigrams: a b a b a b c x -> 8 total, {a, b, c, x} unique
    assert scores["distinct_1"] == pytest.approx(4 / 8)
    # bigrams: (a b)(b a)(a b) + (a b)(b c) -> 5 total, 3 unique
    assert scores["distinct_2"] == pytest.approx(3 / 5)
    # trigrams: (a b a)(b a b) + (a b c) -> 3 total, 3 unique
    assert scores["distinct_3"] == pytest.approx(1.0)


def test_distinct_n_of_empty_outputs_is_zero_not_an_error():
    assert distinct_n(["", ""]) == {"distinct_1": 0.0, "distinct_2": 0.0, "distinct_3": 0.0}
