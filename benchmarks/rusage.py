"""Run a command as the child of this small process; report the child's peak RSS and CPU time.

Usage: ``python benchmarks/rusage.py COMMAND [ARGUMENT...]``. Standard output gets two lines
and nothing else (the command's own standard output goes to /dev/null)::

    child PID               as soon as the command is started
    rusage BYTES SECONDS    when it has exited: its peak RSS and its CPU time (user + system)

Standard input and error are the command's. The exit status is the command's (128 + N if it
was killed by signal N). SIGINT and SIGTERM sent to this process are passed on to the command,
and if this process is killed, the command is killed too (PR_SET_PDEATHSIG), so whoever started
it stops both by stopping this one.

Why a process between: on Linux a process's peak RSS (``ru_maxrss``) starts at the peak RSS of
the memory it was forked from, and ``exec`` keeps it, whether it was forked or vforked (as
``subprocess`` does). Started straight from the load tool, which holds the whole payload, a
server would report the tool's hundreds of MB as its own peak (and
``getrusage(RUSAGE_CHILDREN)`` reports the same inflated figure). Forked from this process, it
starts from this process's own peak, about 10 MB, below any server's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1


def main(command: list[str]) -> int:
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
            if os.getppid() != parent:  # the launcher died before the line above
                os._exit(1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.execvp(command[0], command)
        except BaseException as error:
            print(f"rusage.py: cannot run {command[0]}: {error}", file=sys.stderr, flush=True)
        os._exit(127)

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, pass_on)
    print(f"child {child}", flush=True)
    _, status, usage = os.wait4(child, 0)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # its process id may be reused from now on
    print(f"rusage {usage.ru_maxrss * 1024} {usage.ru_utime + usage.ru_stime}", flush=True)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
