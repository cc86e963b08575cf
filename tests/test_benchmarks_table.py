"""The benchmark table's goal rows: the ratio shown never reads as meeting a goal it misses."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import _ratio_row


@pytest.mark.parametrize(
    ("ratio", "shown", "met"),
    [
        (0.8973, "0.897", "NO"),  # two decimals would read 0.90 next to NO
        (0.89996, "0.89996", "NO"),
        (0.9, "0.90", "yes"),
        (0.9012, "0.90", "yes"),
        (0.8812, "0.88", "NO"),
        (1.137, "1.14", "yes"),
    ],
)
def test_a_goal_rows_ratio_has_the_digits_its_verdict_needs(ratio, shown, met):
    row = _ratio_row("e2e 4000x3000", 31.8, 36.3, ratio, "img/s", 0.9)
    assert (row.ratio, row.met) == (shown, met)
