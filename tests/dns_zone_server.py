"""A DNS server on loopback for end-to-end tests.

``with zone_server(directory, zone) as port:`` writes ``zone`` (name ->
``[[type, value, ttl], ...]``, as tests/test_dns_names.py reads it) to a
file in ``directory``, runs the twisted.names server of
tests/test_dns_names.py (or, with ``module="tests.dnssec_zone"``, the one
that sets the AD bit) as a subprocess, and gives the UDP/TCP port it
printed once it listens; the server is stopped on leaving the block.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.harness import REPO


@contextlib.contextmanager
def zone_server(
    directory: Path, zone: Mapping[str, Any], module: str = "tests.test_dns_names"
) -> Iterator[int]:
    path = directory / "zone.json"
    path.write_text(json.dumps(zone))
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(10)
