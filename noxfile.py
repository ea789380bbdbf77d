"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``.

Each session runs on the interpreter nox itself runs under (Python 3.11 or newer).
"""

from __future__ import annotations

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
    session.install(".")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Run the installed server under minutes of load and churn; check RSS, fds and the log."""
    session.install(".")
    session.run("python", "benchmarks/soak.py", *session.posargs)
