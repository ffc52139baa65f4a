"""pymta's own end-to-end tests run the packaged fixture (pymta.testing).

This module keeps the names the tests import: :class:`PymtaServer` is
:class:`pymta.testing.process.PymtaProcess`, with the same configuration
texts and helpers, and ``REPO`` is this checkout.
"""

from __future__ import annotations

from pathlib import Path

from pymta.testing.process import (
    DEFAULT_MAIN_CF,
    DEFAULT_MASTER_CF,
    DEFAULT_PASSWD,
    IMAP_SERVICE,
    POP3_SERVICE,
    wait_for_file,
)
from pymta.testing.process import PymtaProcess as PymtaServer

REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "DEFAULT_MAIN_CF",
    "DEFAULT_MASTER_CF",
    "DEFAULT_PASSWD",
    "IMAP_SERVICE",
    "POP3_SERVICE",
    "REPO",
    "PymtaServer",
    "wait_for_file",
]
