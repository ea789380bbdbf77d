"""Coverage-guided fuzzing of the framing and dedup kernel with atheris: ``nox -s fuzz``.

Each input is decoded into a byte stream (number lines, ``terminate``, near misses and raw
bytes, as the hypothesis strategies mix them, with some numbers drawn from a few dozen at each
end of the range so that repeats are common) and the points where the stream is cut into
receive buffers. Two checks follow:

- The framer must agree with the reference model of ``tests/_reference.py``, by the same check
  as ``test_framer_matches_the_reference_for_any_stream_cut_anywhere``: the numbers kept, the
  outcome (invalid, terminate or more), the buffer in which it is decided, and at most 9 bytes
  held between buffers. ``LineFramer`` frames each buffer with the compiled kernel's
  ``frame``.
- The kernel's ``select_new``, given the valid lines the framer kept from each buffer (as the
  server gives them: a carried line completed, then a view of the buffer) with an output
  buffer exactly full, must agree with a Python set: the first sightings copied out in
  arrival order, the end offset, the duplicate count and the bits set. ``unmark`` of all the
  first sightings must then leave the bitmap all zero. The 125 MB bitmap is one anonymous mmap
  for the run; the bytes an input touched are cleared after it, so each input starts afresh.

It drives the kernel that ``numlog_trio._kernel`` chooses: the compiled one, or with
``NUMLOG_TRIO_NO_EXTENSIONS=1`` (``NUMLOG_TRIO_NO_EXTENSIONS=1 nox -s fuzz``) its pure-Python
twin; it says which at start. Coverage guidance sees only Python: the reference model and
``numlog_trio``'s Python modules, the pure-Python kernel included, are instrumented, but the
compiled kernel (Cython) cannot be, so it is driven and checked without its branches guiding
the fuzzer.

Arguments are libFuzzer's, for example ``-max_total_time=60``, ``-runs=100000`` or a corpus
directory. A disagreement raises AssertionError: atheris prints the input and writes it to a
``crash-*`` file, which ``python fuzz/fuzz_framing.py CRASH-FILE`` (or ``nox -s fuzz --
CRASH-FILE``) replays.
"""

from __future__ import annotations

import mmap
import sys
from pathlib import Path
from typing import Final

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

# atheris selects what to instrument by top-level package; the compiled kernel is skipped.
with atheris.instrument_imports(include=["numlog_trio", "_reference"]):
    from _reference import NEAR_MISSES, check_framer, cut, numbers_in

    from numlog_trio import LineFramer, Outcome, _kernel

MAX_CUTS: Final = 20
MAX_RAW_PIECE: Final = 16
FEW: Final = 40
"""Numbers drawn from the few at each end of the range: repeats, shared bitmap bytes."""

BITMAP: Final = mmap.mmap(-1, _kernel.BITMAP_BYTES)


def decode(data: bytes) -> tuple[bytes, list[int]]:
    """Turn a fuzzer input into a stream and the offsets where it is cut."""
    provider = atheris.FuzzedDataProvider(data)
    raw_cuts = [provider.ConsumeUInt(2) for _ in range(provider.ConsumeIntInRange(0, MAX_CUTS))]
    pieces: list[bytes] = []
    while provider.remaining_bytes():
        kind = provider.ConsumeIntInRange(0, 5)
        if kind <= 1:
            pieces.append(b"%09d\n" % provider.ConsumeIntInRange(0, 999_999_999))
        elif kind == 2:
            few = provider.ConsumeIntInRange(0, 2 * FEW - 1)
            pieces.append(b"%09d\n" % (few if few < FEW else 999_999_999 - (few - FEW)))
        elif kind == 3:
            pieces.append(b"terminate\n")
        elif kind == 4:
            pieces.append(provider.PickValueInList(list(NEAR_MISSES)))
        else:
            pieces.append(provider.ConsumeBytes(provider.ConsumeIntInRange(0, MAX_RAW_PIECE)))
    stream = b"".join(pieces)
    return stream, [cut % (len(stream) + 1) for cut in raw_cuts]


def check_select_new(stream: bytes, offsets: list[int]) -> None:
    """Check ``select_new`` and ``unmark`` against a set for the lines framed from the stream.

    Raises:
        AssertionError: The kernel copied out other lines than the first sightings, gave
            another end or duplicate count, set other bits, or ``unmark`` left bits set.
    """
    buffers, _ = cut(stream, offsets)
    framer = LineFramer()
    seen: set[int] = set()
    touched: list[int] = []
    first_sightings = bytearray()
    try:
        for index, buffer in enumerate(buffers):
            framed = framer.feed(buffer)
            for lines in framed.lines:
                numbers = numbers_in(lines)
                touched += numbers
                at = index % 3
                out = bytearray(b"x" * at) + bytearray(len(lines))  # exactly full
                end, duplicates = _kernel.select_new(BITMAP, lines, out, at)
                new = [number for number in dict.fromkeys(numbers) if number not in seen]
                seen.update(new)
                expected = b"".join(b"%09d\n" % number for number in new)
                assert (end, duplicates) == (at + len(expected), len(numbers) - len(new)), (
                    f"select_new of {bytes(lines)!r} at {at}: end {end}, duplicates "
                    f"{duplicates}; expected {new} new"
                )
                assert out[:at] == b"x" * at, f"select_new wrote before offset {at}"
                assert out[at:end] == expected, f"copied out {out[at:end]!r}, not {expected!r}"
                first_sightings += out[at:end]
            if framed.outcome is not Outcome.MORE:
                break
        expected_bits = dict.fromkeys((number >> 3 for number in touched), 0)
        for number in seen:
            expected_bits[number >> 3] |= 1 << (number & 7)
        bits = {offset: BITMAP[offset] for offset in expected_bits}
        assert bits == expected_bits, f"bitmap bytes {bits}, expected {expected_bits}"
        _kernel.unmark(BITMAP, first_sightings)
        left = sorted({number >> 3 for number in touched if BITMAP[number >> 3]})
        assert not left, f"bitmap bytes {left} still set after unmark"
    finally:
        for number in touched:
            BITMAP[number >> 3] = 0


def test_one_input(data: bytes) -> None:
    """Check the framer and the dedup kernel for the stream and cuts decoded from ``data``."""
    stream, offsets = decode(data)
    check_framer(stream, offsets)
    check_select_new(stream, offsets)


def main() -> None:
    """Fuzz until libFuzzer's options (``sys.argv``) say to stop."""
    print(f"fuzz_framing: driving the {_kernel.NAME} kernel", file=sys.stderr, flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
