"""scanworker: what a scan worker process does when it starts.

The scan pool (:mod:`pymta.imap.scan`) starts each worker process with
:func:`started`: it runs :data:`SCAN_NICE` steps nicer than the server
and ends with it. The pool names it by this module, which the new
process imports before anything else: it imports only the standard
library (a worker that imported the server's modules took twice the CPU
to start, on the first SORT or body SEARCH).

Untrusted input: none. Writes nothing; logs nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal

#: How much nicer (lower CPU priority) the scan workers are than the server.
SCAN_NICE = 10

_PR_SET_PDEATHSIG = 1


def started(server_pid: int) -> None:
    """(Worker process, at its start) yield the CPU to the reactor processes
    (a scan is background work, a new session is not), and end with the
    server even when it is killed (Linux's PR_SET_PDEATHSIG): the worker
    itself holds its task queue open and would otherwise wait forever."""
    os.nice(SCAN_NICE)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a killed server leaves its idle workers behind
    if os.getppid() != server_pid:
        os._exit(0)  # the server died before the prctl took effect
