"""smtp_reply: SMTP replies as values, and what they mean for a recipient.

A :class:`Reply` is one (possibly multi-line) server reply. ``dsn`` is its
RFC 3463 enhanced status code — taken from the text when the server gave
one in the right class (RFC 2034), else derived from the reply code as
Postfix does (2.0.0, 4.0.0, 5.0.0). :func:`said` formats Postfix's
diagnostic: ``host mx.example[192.0.2.1] said: 550 5.1.1 ... (in reply to
RCPT TO command)``. Untrusted input: everything (the text is shown, never
interpreted beyond the code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reply as one line (``250 2.0.0 Ok: queued as X``)."""
        return (
            f"{self.code} " + " ".join(line for line in self.lines if line)
            if self.lines
            else str(self.code)
        )

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def dsn(self) -> str:
        first = self.lines[0] if self.lines else ""
        match = _ENHANCED.match(first)
        klass = str(self.code)[0]
        if match and match.group(1) == klass:
            return f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        return {"2": "2.0.0", "3": "2.0.0", "4": "4.0.0"}.get(klass, "5.0.0")

    @property
    def keywords(self) -> dict[str, str]:
        """EHLO extensions, upper-cased keyword to parameters (line 1 is the greeting)."""
        found: dict[str, str] = {}
        for line in self.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                found[keyword.upper()] = params.strip()
        return found


def said(relay: str, reply: Reply, command: str) -> str:
    """Postfix's ``host X said: <reply> (in reply to <command> command)``."""
    return f"host {relay} said: {reply.text} (in reply to {command} command)"


class ReplyParser:
    """Collects reply lines; :meth:`feed` returns a Reply when one is complete,
    raises ValueError on a line that is not ``NNN[ -]text``."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def feed(self, line: bytes) -> Reply | None:
        text = line.decode("utf-8", "replace")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            raise ValueError(f"malformed reply: {text[:100]!r}")
        self._lines.append(text[4:])
        if len(text) > 3 and text[3] == "-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(int(text[:3]), lines)
