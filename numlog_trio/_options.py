"""What the package's commands share about their options: one-line errors, ``--version``."""

from __future__ import annotations

import argparse
from typing import NoReturn

from . import __version__


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad option as one line on stderr (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give the parser ``--version``: print the program's name and version, and exit 0."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the program's name and version, and exit",
    )
