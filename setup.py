"""Build the compiled kernel if possible; everything else about the package is in pyproject.toml.

The kernel (``numlog_trio/_kernel_c.pyx``) is optional, as in multidict, yarl and PyYAML: where
it cannot be compiled (no C compiler, no Python headers, a big-endian machine) the package is
installed without it and runs the pure-Python twin, ``_kernel_py.py``, much slower.
``NUMLOG_TRIO_NO_EXTENSIONS`` set to anything but ``""`` or ``0`` skips the build.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

NO_EXTENSIONS = "NUMLOG_TRIO_NO_EXTENSIONS"
PURE = (
    "numlog-trio: the compiled kernel is not built ({}): the pure-Python kernel will be used, "
    "much slower; for the fast one, install a C compiler and the Python headers (for example "
    "'apt install gcc python3-dev') and reinstall"
)


def say(message: str) -> None:
    """Print one line about the build (pip shows it only with -v; a build log keeps it)."""
    print(message, file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """Builds the kernel if it can; if not, says so in one line and installs without it."""

    def run(self) -> None:
        """Build, or leave the kernel out where there is no compiler or it fails."""
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError):
            # The compiler's own messages are above this line in a verbose build's output.
            say(PURE.format("compiling it failed"))


def extensions() -> list[Extension]:
    """The kernel to build, or none if NUMLOG_TRIO_NO_EXTENSIONS is set."""
    if os.environ.get(NO_EXTENSIONS, "") not in ("", "0"):
        say(PURE.format(f"{NO_EXTENSIONS} is set"))
        return []
    from Cython.Build import cythonize

    # -O3 for the loops; no -march: a wheel built here must run on any x86-64.
    kernel = Extension(
        "numlog_trio._kernel_c", ["numlog_trio/_kernel_c.pyx"], extra_compile_args=["-O3"]
    )
    return cythonize([kernel])


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
