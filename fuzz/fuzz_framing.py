"""Coverage-guided fuzzing of the framing with atheris: run it with ``nox -s fuzz``.

Each input is decoded into a byte stream (number lines, ``terminate``, near misses and raw
bytes, as the hypothesis strategies mix them) and the points where the stream is cut into
receive buffers. The framer must agree with the reference model of ``tests/_reference.py``,
by the same check as ``test_framer_matches_the_reference_for_any_stream_cut_anywhere``: the
numbers kept, the outcome (invalid, terminate or more), the buffer in which it is decided,
and at most 9 bytes held between buffers.

Arguments are libFuzzer's, for example ``-max_total_time=60``, ``-runs=100000`` or a corpus
directory. A disagreement raises AssertionError: atheris prints the input and writes it to a
``crash-*`` file, which ``python fuzz/fuzz_framing.py CRASH-FILE`` (or ``nox -s fuzz --
CRASH-FILE``) replays.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with atheris.instrument_imports(include=["numlog_trio._framing", "_reference"]):
    from _reference import NEAR_MISSES, check_framer

MAX_CUTS: Final = 20
MAX_RAW_PIECE: Final = 16


def decode(data: bytes) -> tuple[bytes, list[int]]:
    """Turn a fuzzer input into a stream and the offsets where it is cut."""
    provider = atheris.FuzzedDataProvider(data)
    raw_cuts = [provider.ConsumeUInt(2) for _ in range(provider.ConsumeIntInRange(0, MAX_CUTS))]
    pieces: list[bytes] = []
    while provider.remaining_bytes():
        kind = provider.ConsumeIntInRange(0, 5)
        if kind <= 2:
            pieces.append(b"%09d\n" % provider.ConsumeIntInRange(0, 999_999_999))
        elif kind == 3:
            pieces.append(b"terminate\n")
        elif kind == 4:
            pieces.append(provider.PickValueInList(list(NEAR_MISSES)))
        else:
            pieces.append(provider.ConsumeBytes(provider.ConsumeIntInRange(0, MAX_RAW_PIECE)))
    stream = b"".join(pieces)
    return stream, [cut % (len(stream) + 1) for cut in raw_cuts]


def test_one_input(data: bytes) -> None:
    """Check the framer against the reference for the stream and cuts decoded from ``data``."""
    check_framer(*decode(data))


def main() -> None:
    """Fuzz until libFuzzer's options (``sys.argv``) say to stop."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
