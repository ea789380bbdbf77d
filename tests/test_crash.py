"""The ``numlog-trio`` command killed with SIGKILL: what its log may hold afterwards.

The contract, checked by :func:`helpers.assert_crash_consistent`: after a SIGKILL at any
moment, ``numbers.log`` holds only whole lines of nine ASCII digits and a newline, each number
at most once and only numbers that clients sent, except that its last line may be torn (1 to
9 digits, no newline): Linux can stop a large write at a page boundary when a fatal signal
arrives. And the server counts a number only once its write returned, so the last unique
total it reported before the kill is at most the number of whole lines.

Here the checker is tested on logs made by hand, so that it cannot pass vacuously; it runs no
server.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pytest
from helpers import assert_crash_consistent, lines

# The checker itself.

SENT: Final = np.arange(1, 10)
"""The numbers 1 to 9: what the clients sent, for the logs made by hand."""


@pytest.mark.parametrize(
    ("data", "unique_total", "whole"),
    [
        (b"", 0, 0),
        (lines(3, 1, 2), 3, 3),
        (lines(3, 1, 2), 1, 3),
        (lines(3, 1) + b"0", 2, 2),
        (lines(3, 1) + b"00000000", 2, 2),
        (lines(3, 1) + b"123456789", 0, 2),
        (b"12345", 0, 0),
    ],
    ids=[
        "empty",
        "whole-lines",
        "a-report-behind",
        "torn-after-1-digit",
        "torn-after-8-digits",
        "torn-after-9-digits",
        "only-a-torn-line",
    ],
)
def test_the_checker_accepts_whole_lines_and_a_torn_last_line(
    data: bytes, unique_total: int, whole: int
) -> None:
    assert assert_crash_consistent(data, SENT, unique_total=unique_total) == whole


@pytest.mark.parametrize(
    ("data", "unique_total", "message"),
    [
        (lines(3, 1) + b"1234567890", 0, r"line 3 of 3 whole lines is b'1234567890'"),
        (lines(3, 1) + b"12\n", 0, r"after 2 whole lines the log ends with b'12\\n'"),
        (lines(3, 1) + b"12a", 0, r"ends with b'12a', not with the 1 to 9 digits"),
        (lines(3) + b"00000001x\n" + lines(2), 0, r"line 2 of 3 whole lines is b'00000001x\\n'"),
        (lines(3) + b"0001\n" + lines(2) + b"00000", 0, r"line 2 of 3 whole lines is b'0001\\n0"),
        (lines(3, 1, 2, 1), 0, r"000000001 is logged on lines \[2, 4\] \(1 repeat"),
        (lines(3, 10, 2), 0, r"line 2 logs 000000010, which no client sent"),
        (lines(3, 1), 3, r"a report counted 3 unique numbers, but the log holds 2 whole lines"),
        (lines(3, 1) + b"00000000", 3, r"counted 3 unique numbers, but the log holds 2 whole"),
    ],
    ids=[
        "ten-bytes-without-a-newline",
        "a-newline-in-the-torn-line",
        "a-letter-in-the-torn-line",
        "a-bad-line-in-the-middle",
        "a-short-line-in-the-middle",
        "a-repeat",
        "a-number-nobody-sent",
        "a-report-ahead-of-the-log",
        "a-report-counting-the-torn-line",
    ],
)
def test_the_checker_rejects_anything_else(data: bytes, unique_total: int, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_crash_consistent(data, SENT, unique_total=unique_total)
