"""Build the compiled kernel if possible; everything else about the package is in pyproject.toml.

The kernel (``numlog_trio/_kernel_c.pyx``) is optional, as in multidict, yarl and PyYAML: where
it cannot be built (Cython fails, no C compiler, no Python headers, a big-endian machine) the
package is installed without it and runs the pure-Python twin, ``_kernel_py.py``, much slower.
``NUMLOG_TRIO_NO_EXTENSIONS`` set to anything but ``""`` or ``0`` skips the build.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

NO_EXTENSIONS = "NUMLOG_TRIO_NO_EXTENSIONS"
HERE = Path(__file__).resolve().parent
PURE = (
    "numlog-trio: the compiled kernel is not built ({}): the pure-Python kernel will be used, "
    "much slower; {}"
)
HOW_TO_COMPILE = (
    "for the fast one, install a C compiler and the Python headers (for example "
    "'apt install gcc python3-dev') and reinstall"
)


def say(message: str) -> None:
    """Print one line about the build, where the user sees it.

    pip shows a build's own output only with -v, so the line also goes to the terminal, if
    there is one; a build log keeps it either way.
    """
    print(message, file=sys.stderr, flush=True)
    try:
        with open("/dev/tty", "w") as terminal:
            terminal.write(f"\n{message}\n")
    except OSError:  # no terminal (CI, a container), or not a POSIX system
        pass


def forget_earlier_builds() -> None:
    """Remove extension modules that an earlier build left in build/ (pip builds in place).

    setuptools puts all of build/lib* into the wheel: a module from an earlier build would go
    in even where this build could not compile it, or, under the kernel's old name
    (``_kernel``), shadow the module that chooses the kernel now.
    """
    for pattern in ("*.so", "*.pyd"):
        for module in HERE.glob(f"build/lib*/numlog_trio/{pattern}"):
            module.unlink()


class OptionalBuildExt(build_ext):
    """Builds the kernel if it can; if not, says so in one line and installs without it."""

    def run(self) -> None:
        """Translate the kernel with Cython and compile it, or leave it out of the install."""
        if os.environ.get(NO_EXTENSIONS, "") not in ("", "0"):
            say(PURE.format(f"{NO_EXTENSIONS} is set", f"unset {NO_EXTENSIONS} for the fast one"))
            self.extensions = []
            return
        try:
            from Cython.Build import cythonize

            # Its .pyx sources become the .c files Cython writes (on the same objects, which
            # setuptools has prepared).
            for extension, translated in zip(
                self.extensions, cythonize(self.extensions), strict=True
            ):
                extension.sources = translated.sources
        except Exception as error:  # Cython missing, or unable to translate the kernel
            say(PURE.format(f"Cython failed: {error}", "'pip install -v .' shows why"))
            self.extensions = []
            return
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError):
            # The compiler's own messages are above this line in a verbose build's output.
            say(PURE.format("compiling it failed", HOW_TO_COMPILE))
            self.extensions = []


# -O3 for the loops; no -march: a wheel built here must run on any x86-64.
KERNEL = Extension(
    "numlog_trio._kernel_c", ["numlog_trio/_kernel_c.pyx"], extra_compile_args=["-O3"]
)

forget_earlier_builds()
setup(ext_modules=[KERNEL], cmdclass={"build_ext": OptionalBuildExt})
