"""Delivery headers: Return-Path / Delivered-To prepending and the
Delivered-To mail-loop check.

Mirrors Postfix's mail_copy() flags MAIL_COPY_RETURN_PATH and
MAIL_COPY_DELIVERED, and delivered_hdr.c: a message that already carries
``Delivered-To: <this recipient>`` is looping (5.4.6) and is not delivered
again. Untrusted input: the message header (only compared, never
interpreted). Writes nothing.
"""

from __future__ import annotations

from pymta.queue.reference import BLOCK_SIZE, IMessageContent

#: How much of a message header_of reads at most (Postfix's default
#: header_size_limit is 102400; a Delivered-To after that is not looked for).
HEADER_READ_LIMIT = 1024 * 1024


def header_block(content: bytes) -> bytes:
    """The header section of an LF-terminated message (without the blank line)."""
    if content.startswith(b"\n"):
        return b""
    end = content.find(b"\n\n")
    return content if end < 0 else content[: end + 1]


def header_of(message: IMessageContent, limit: int = HEADER_READ_LIMIT) -> bytes:
    """The header section of a queued message: the one the queue store kept
    in memory (``message.header``), or else read block by block from the
    queue file until its blank line (at most ``limit`` bytes)."""
    known = message.header
    if known is not None and len(known) < limit:
        # What the read below would return; no file opened on the reactor.
        return known
    reader = message.open()
    try:
        data = b""
        while len(data) < limit:
            block = reader.read(BLOCK_SIZE)
            if not block:
                break
            data += block
            if data.startswith(b"\n") or b"\n\n" in data[-len(block) - 1 :]:
                break
        return header_block(data[:limit])
    finally:
        reader.close()


def delivered_to_loop(content: bytes, recipient: str) -> bool:
    """True when a Delivered-To header already names ``recipient`` (case-insensitive)."""
    headers = header_block(content)
    lowered = headers.lower()
    if b"delivered-to:" not in lowered:
        return False
    wanted = recipient.lower().encode("utf-8", "surrogateescape")
    for line in lowered.split(b"\n"):
        if line.startswith(b"delivered-to:"):
            value = line[len(b"delivered-to:") :].strip()
            if value.startswith(b"<") and value.endswith(b">"):
                value = value[1:-1]
            if value == wanted:
                return True
    return False


def delivery_headers(sender: str, recipient: str, return_path: bool = True) -> bytes:
    """``Return-Path: <sender>`` and ``Delivered-To: recipient`` lines."""
    lines = []
    if return_path:
        lines.append(f"Return-Path: <{sender}>\n")
    lines.append(f"Delivered-To: {recipient}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")
