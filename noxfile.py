"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``.

Each session runs on the interpreter nox itself runs under (Python 3.11 or newer). ``bench``,
``soak`` and ``fuzz`` run only when asked for by name (``nox -s fuzz``): CI does not run them.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package with its test extras and run the test suite."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


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
