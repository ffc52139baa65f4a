"""What the harnesses share: catching failures a protocol logs, and cutting
the fuzzer's bytes into the chunks a transport would deliver.

Imports nothing of pymta, so that the runner can instrument pymta's modules
as the target imports them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer


class Finding(Exception):
    """A harness's own check failed: not a documented error of the module."""


@implementer(ILogObserver)
class LoggedFailures:
    """Collects failures logged through twisted.logger while open: a
    protocol that catches an unexpected exception and answers with a
    generic error (451, NO [SERVERBUG], -ERR) still had a bug."""

    def __init__(self) -> None:
        self.failures: list[Any] = []

    def __call__(self, event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            self.failures.append(failure)

    def __enter__(self) -> LoggedFailures:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        globalLogPublisher.removeObserver(self)
        if kind is None and self.failures:
            failure = self.failures[0]
            raise Finding(f"logged failure: {failure.getTraceback()}")


def chunks(data: bytes) -> Iterator[bytes]:
    """data as a transport might deliver it: the first byte picks the chunk
    size (0: all at once), so that the fuzzer explores split lines and
    literals too."""
    if not data:
        return
    size = data[0] % 17
    rest = data[1:]
    if size == 0:
        yield rest
        return
    for i in range(0, len(rest), size):
        yield rest[i : i + size]


def scratch_directory(name: str) -> Path:
    """A directory for a harness's files (a passwd-file): in memory where
    there is a tmpfs, as harnesses rewrite their files for each input, and
    the same one on every run (libFuzzer ends its process without running
    exit handlers, so a fresh one each run would be left behind)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    path = Path(base) / f"pymta-fuzz-{name}-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path
