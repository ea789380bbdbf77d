"""The two kernels, for the tests that run against each: the compiled one and its twin.

Every test of ``tests/test_kernel.py`` takes the ``kernel`` fixture (``conftest.py``) and so
runs once for each name of :func:`kernel_names`. The compiled kernel must be installed for the
tests to pass: a build that quietly fell back to the pure-Python one fails them, rather than
testing one kernel twice. Only where ``NUMLOG_TRIO_NO_EXTENSIONS`` asks for the pure-Python
kernel (as the session that installs without a C compiler does) is it the one tested.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from numlog_trio import _kernel, _kernel_py

if TYPE_CHECKING:
    from typing_extensions import Buffer


class Kernel(Protocol):
    """What both kernel modules provide (the constants are shared: ``numlog_trio._kernel``)."""

    def frame(self, carried: Buffer, data: Buffer) -> tuple[bytes | None, int, int, int, bytes]:
        """See ``numlog_trio/_kernel_py.py``."""

    def select_new(self, bitmap: Buffer, lines: Buffer, out: Buffer, at: int) -> tuple[int, int]:
        """See ``numlog_trio/_kernel_py.py``."""

    def unmark(self, bitmap: Buffer, lines: Buffer) -> None:
        """See ``numlog_trio/_kernel_py.py``."""

    def mark_new(self, bitmap: Buffer, lines: Buffer) -> tuple[int, int]:
        """See ``numlog_trio/_kernel_py.py``."""


def pure_only() -> bool:
    """Whether ``NUMLOG_TRIO_NO_EXTENSIONS`` asks for the pure-Python kernel alone."""
    return _kernel.extensions_disabled()


def kernel_names() -> list[str]:
    """The kernels to test: both, unless only the pure-Python one is asked for."""
    return ["pure"] if pure_only() else ["compiled", "pure"]


def load_kernel(name: str) -> Kernel:
    """The kernel module called ``name`` (``compiled`` or ``pure``).

    Raises:
        ImportError: The compiled kernel is not installed (it could not be built).
    """
    if name == "pure":
        return _kernel_py
    from numlog_trio import _kernel_c

    return _kernel_c
