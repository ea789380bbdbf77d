"""Which kernel runs, and the server's start saying so.

The compiled kernel runs unless it is missing or ``NUMLOG_TRIO_NO_EXTENSIONS`` asks for the
pure-Python one; the start names the kernel and, for the pure one, says why and what to do.

The choice is made once, at import, so each case imports the package in a fresh interpreter
(``-P``: the installed package, not the source tree). Where the compiled kernel is not
installed (the session that installs without a C compiler), it must be the pure one that runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import TIMEOUT, start_server
from kernels import pure_only

from numlog_trio import _kernel, _kernel_py

INSTALLED: bool = importlib.util.find_spec("numlog_trio._kernel_c") is not None
"""Whether the compiled kernel is installed (else the install left it out)."""

_REPORT = """
import sys
{before}
from numlog_trio import _kernel, _kernel_py
print(_kernel.NAME, _kernel.frame is _kernel_py.frame, _kernel.slower_kernel_advice(), sep="|")
"""


def chosen(variable: str | None, before: str = "") -> tuple[str, bool, str]:
    """Import the package in a fresh interpreter and say which kernel it chose.

    Returns:
        The kernel's name, whether it is the pure-Python one, and the advice line (``"None"``
        for none).
    """
    env = {key: value for key, value in os.environ.items() if key != _kernel.NO_EXTENSIONS_VARIABLE}
    if variable is not None:
        env[_kernel.NO_EXTENSIONS_VARIABLE] = variable
    done = subprocess.run(
        [sys.executable, "-P", "-c", _REPORT.format(before=before)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    name, pure, advice = done.stdout.strip().split("|")
    return name, pure == "True", advice


def test_the_kernel_that_runs_here_is_the_one_asked_for() -> None:
    # In the sessions that build the compiled kernel, it must be the one the server runs: a
    # build that quietly fell back would otherwise test the pure one twice.
    assert _kernel.COMPILED is not pure_only()
    assert (_kernel.frame is _kernel_py.frame) is pure_only()


@pytest.mark.parametrize("variable", ["1", "yes", "true"])
def test_the_variable_chooses_the_pure_kernel(variable: str) -> None:
    name, pure, advice = chosen(variable)
    assert (name, pure) == ("pure-Python", True)
    assert "because NUMLOG_TRIO_NO_EXTENSIONS is set" in advice
    assert "unset NUMLOG_TRIO_NO_EXTENSIONS" in advice


@pytest.mark.parametrize("variable", [None, "", "0"])
def test_without_the_variable_the_compiled_kernel_runs_where_installed(
    variable: str | None,
) -> None:
    name, pure, advice = chosen(variable)
    if INSTALLED:
        assert (name, pure, advice) == ("compiled", False, "None")
    else:
        assert (name, pure) == ("pure-Python", True)
        assert "not installed" in advice


def test_a_compiled_kernel_that_cannot_be_imported_leaves_the_pure_one() -> None:
    # As where the build left it out: importing it fails.
    name, pure, advice = chosen(None, before='sys.modules["numlog_trio._kernel_c"] = None')
    assert (name, pure) == ("pure-Python", True)
    assert "the compiled one is not installed" in advice
    assert "C compiler" in advice
    assert "reinstall" in advice


_UNLOADABLE = """
class Unloadable:
    def find_spec(self, name, path=None, target=None):
        if name == "numlog_trio._kernel_c":
            raise ImportError("undefined symbol: PyFoo")
sys.meta_path.insert(0, Unloadable())
"""


def test_a_compiled_kernel_that_cannot_be_loaded_says_why() -> None:
    # As one built for another interpreter: it is there, and importing it fails.
    name, pure, advice = chosen(None, before=_UNLOADABLE)
    assert (name, pure) == ("pure-Python", True)
    assert "installed but cannot be loaded (undefined symbol: PyFoo)" in advice
    assert "reinstall numlog-trio with the Python that runs it" in advice


@pytest.mark.parametrize("variable", ["", "1"])
async def test_the_start_says_which_kernel_runs(tmp_path: Path, variable: str) -> None:
    name, _, advice = chosen(variable)
    async with trio.open_nursery() as nursery:
        env = {_kernel.NO_EXTENSIONS_VARIABLE: variable}
        server = await start_server(nursery, tmp_path, env=env)
        await server.send_terminate()
        finished = await server.finish()
    assert finished.returncode == 0, finished.stderr
    said = finished.stderr.splitlines()
    assert f"with the {name} kernel, writing numbers.log" in said[0], said
    if advice == "None":
        assert not any("kernel" in text for text in said[1:]), said
    else:
        assert said[1] == f"numlog-trio: {advice}", said
