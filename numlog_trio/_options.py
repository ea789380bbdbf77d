"""What the package's commands share about their options: errors in one line, in the user's words.

A bad value is rejected with what the option must be (``argument --port: must be a port
number 0..65535, not 'abc'``), never with the name of the function that read it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad option as one line on stderr (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def package_version() -> str:
    """The installed package's version: defined once, in pyproject.toml, read from the metadata.

    Read only when asked for: importing ``importlib.metadata`` costs every start some 30 ms and
    2 MiB of memory.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("numlog-trio")
    except PackageNotFoundError:  # a copy of the source tree that was never installed
        return "unknown"


class _PrintVersion(argparse.Action):
    """``--version``: print the program's name and the package's version, and exit 0."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        print(f"{parser.prog} {package_version()}")  # on standard output, as argparse's own
        parser.exit(0)


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give the parser ``--version``: print the program's name and version, and exit 0."""
    parser.add_argument(
        "--version",
        action=_PrintVersion,
        nargs=0,
        default=argparse.SUPPRESS,
        help="print the program's name and version, and exit",
    )


def value_type(
    rule: str, convert: Callable[[str], T], valid: Callable[[T], bool]
) -> Callable[[str], T]:
    """Return an option's ``type``: a value converted, or an error saying what it must be.

    Args:
        rule: What a valid value is, in the user's words: the error reads "must be
            {rule}, not '{value}'".
        convert: Makes the value from the text; a ValueError means it is not one.
        valid: Whether a converted value is allowed.
    """

    def read(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            pass
        else:
            if valid(value):
                return value
        raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}")

    return read


# ``0 < s < inf`` is false for nan, as every comparison with nan is.
port = value_type("a port number 0..65535", int, lambda number: 0 <= number <= 65535)
positive_int = value_type("a whole number, 1 or more", int, lambda number: number >= 1)
positive_seconds = value_type(
    "a finite number of seconds above 0", float, lambda seconds: 0 < seconds < math.inf
)
seconds = value_type(
    "a finite number of seconds, 0 or more", float, lambda seconds: 0 <= seconds < math.inf
)
