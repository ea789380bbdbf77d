"""``python -m numlog_trio``: the same as the ``numlog-trio`` command."""

from ._cli import run

if __name__ == "__main__":
    run()
