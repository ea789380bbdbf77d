# Types of the compiled kernel, _kernel_c.pyx (the docstrings are there).
from typing import Final

from typing_extensions import Buffer

LINE_SIZE: Final[int]
NUMBER_SPACE: Final[int]
BITMAP_BYTES: Final[int]
MORE: Final[int]
INVALID: Final[int]
TERMINATE: Final[int]
PREFETCH_DISTANCE: Final[int]
ALL_MARKED: Final[int]
NOT_A_NUMBER: Final[int]
SEEN_BEFORE: Final[int]

def frame(carried: Buffer, data: Buffer) -> tuple[bytes | None, int, int, int, bytes]: ...
def select_new(bitmap: Buffer, lines: Buffer, out: Buffer, at: int) -> tuple[int, int]: ...
def unmark(bitmap: Buffer, lines: Buffer) -> None: ...
def mark_new(bitmap: Buffer, lines: Buffer) -> tuple[int, int]: ...
