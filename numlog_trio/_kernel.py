"""The kernel that runs: the compiled one (``_kernel_c``) where it was built, else its twin.

Both implement the same functions with the same results and errors (``_kernel_c.pyx``, Cython,
and ``_kernel_py.py``, pure Python, about 20 times slower); the rest of the package calls them
through this module. ``NUMLOG_TRIO_NO_EXTENSIONS`` set to anything but ``""`` or ``0`` chooses
the pure-Python one even where the compiled one is installed (and, at install, skips building
it). The constants are the same in both, so they come from the pure-Python module either way.
"""

from __future__ import annotations

import os
from typing import Final

from ._kernel_py import (  # the same in both kernels
    ALL_MARKED,
    BITMAP_BYTES,
    INVALID,
    LINE_SIZE,
    MORE,
    NOT_A_NUMBER,
    NUMBER_SPACE,
    PREFETCH_DISTANCE,
    SEEN_BEFORE,
    TERMINATE,
)

NO_EXTENSIONS_VARIABLE: Final = "NUMLOG_TRIO_NO_EXTENSIONS"


PURE_REASON: str | None
"""Why the pure-Python kernel runs, or None when the compiled one does."""
_HOW_TO_COMPILE: str


def extensions_disabled() -> bool:
    """Whether ``NUMLOG_TRIO_NO_EXTENSIONS`` asks for the pure-Python kernel.

    (setup.py reads it alike, to skip the build.)
    """
    return os.environ.get(NO_EXTENSIONS_VARIABLE, "") not in ("", "0")


if extensions_disabled():
    from ._kernel_py import frame, mark_new, select_new, unmark

    PURE_REASON = f"{NO_EXTENSIONS_VARIABLE} is set"
    _HOW_TO_COMPILE = f"unset {NO_EXTENSIONS_VARIABLE} (and reinstall, if it was set then too)"
else:
    _HOW_TO_COMPILE = (
        "install a C compiler and the Python headers (for example 'apt install gcc "
        "python3-dev') and reinstall numlog-trio"
    )
    try:
        from ._kernel_c import frame, mark_new, select_new, unmark

        PURE_REASON = None
    except ModuleNotFoundError:
        from ._kernel_py import frame, mark_new, select_new, unmark

        PURE_REASON = "the compiled one is not installed: it could not be built"
    except ImportError as error:  # there, but not loadable: built for another interpreter?
        from ._kernel_py import frame, mark_new, select_new, unmark

        PURE_REASON = f"the compiled one is installed but cannot be loaded ({error})"
        _HOW_TO_COMPILE = "reinstall numlog-trio with the Python that runs it"

COMPILED: Final = PURE_REASON is None
"""Whether the compiled kernel runs."""
NAME: Final = "compiled" if COMPILED else "pure-Python"
"""Which kernel runs, as the server's start says it."""


def slower_kernel_advice() -> str | None:
    """One line for the user when the pure-Python kernel runs (else None): why, and what to do."""
    if COMPILED:
        return None
    return (
        f"the pure-Python kernel runs because {PURE_REASON}; it is much slower than the "
        f"compiled one (about 20 times, see the README); for the compiled one, {_HOW_TO_COMPILE}"
    )


__all__ = [
    "ALL_MARKED",
    "BITMAP_BYTES",
    "COMPILED",
    "INVALID",
    "LINE_SIZE",
    "MORE",
    "NAME",
    "NOT_A_NUMBER",
    "NUMBER_SPACE",
    "PREFETCH_DISTANCE",
    "PURE_REASON",
    "SEEN_BEFORE",
    "TERMINATE",
    "frame",
    "mark_new",
    "select_new",
    "slower_kernel_advice",
    "unmark",
]
