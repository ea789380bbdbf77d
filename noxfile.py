"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``.

``tests`` runs the suite on each CPython from 3.11 to 3.13 with the compiled kernel (the kernel
tests run against the pure-Python twin too), and once more, on 3.11, installed as on a machine
without a C compiler: the whole suite with the pure-Python kernel. An interpreter that is missing
is skipped with a warning, unless the ``CI`` environment variable is set: then it fails the
run. ``lint`` and ``typecheck`` run on the interpreter nox itself runs under. ``bench``, ``soak``
and ``fuzz`` run only when asked for by name (``nox -s fuzz``): CI does not run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

PYTHONS: Final = ("3.11", "3.12", "3.13")
"""The CPythons supported (``requires-python`` and the classifiers say the same)."""
PURE_PYTHON: Final = PYTHONS[0]
"""Where the suite also runs with the pure-Python kernel: the oldest supported."""
NO_EXTENSIONS: Final = "NUMLOG_TRIO_NO_EXTENSIONS"


@nox.session
@nox.parametrize(
    ("python", "kernel"),
    [*((python, "compiled") for python in PYTHONS), (PURE_PYTHON, "pure")],
)
def tests(session: nox.Session, kernel: str) -> None:
    """Install the package with its test extras and run the test suite, with either kernel."""
    if kernel == "compiled":
        session.install(".[test]")
        session.run("pytest", *session.posargs)
        return
    # As on a machine without a working C compiler: the install must succeed without the
    # compiled kernel, and the package must say it runs the pure-Python one.
    session.install(".[test]", env={"CC": "/bin/false"})
    session.run("python", "-c", _CHECK_NOT_COMPILED)
    # The kernel tests are told that the pure-Python kernel is the only one to test.
    session.run("pytest", *session.posargs, env={NO_EXTENSIONS: "1"})


_CHECK_NOT_COMPILED: Final = """
import sys
from numlog_trio import _kernel
if _kernel.COMPILED:
    sys.exit("the compiled kernel was built, with CC=/bin/false")
print("numlog-trio:", _kernel.slower_kernel_advice())
"""


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with strict mypy."""
    session.install(".[typecheck]", "nox")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark the installed server against the per-line baseline (see benchmarks/)."""
    session.install(".[load]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Run the installed server under minutes of load and churn; check RSS, fds and the log."""
    session.install(".[load]")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """Fuzz the framing with atheris for 60 s; arguments after ``--`` go to libFuzzer.

    It drives the compiled kernel, or with ``NUMLOG_TRIO_NO_EXTENSIONS=1 nox -s fuzz`` the
    pure-Python one, whose branches then guide the fuzzer too.

    For example ``nox -s fuzz -- -max_total_time=600`` (the last value of an option wins),
    ``nox -s fuzz -- fuzz/corpus`` to keep the inputs found for the next run, or
    ``nox -s fuzz -- fuzz/artifacts/crash-...`` to replay an input that failed (failing
    inputs are written to ``fuzz/artifacts/``).
    """
    session.install(".[fuzz]")
    for directory in ("fuzz/artifacts", "fuzz/corpus"):
        Path(directory).mkdir(exist_ok=True)
    session.run(
        "python",
        "fuzz/fuzz_framing.py",
        "-max_total_time=60",
        "-artifact_prefix=fuzz/artifacts/",
        *session.posargs,
    )
