"""headerblock: how a message file is opened for reading, and where its header ends.

Shared by the store's own reads (:mod:`pymta.mailstore.files`,
:mod:`pymta.mailstore.names`) and the scan worker processes'
(:mod:`pymta.mailstore.digestwork`), so it imports nothing but the
standard library: a worker process that imports it starts fast.

Untrusted input: message content (only searched for its blank line).
Writes nothing; logs nothing.
"""

from __future__ import annotations

import os

#: Opening a message file: never through a symbolic link, never waiting on
#: a FIFO.
MESSAGE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def header_block(content: bytes) -> bytes:
    """The header block up to and including the blank line (or all of it)."""
    if content.startswith(b"\n"):
        return b"\n"
    end = content.find(b"\n\n")
    if end < 0:
        crlf = content.find(b"\r\n\r\n")
        return content if crlf < 0 else content[: crlf + 4]
    return content[: end + 2]
