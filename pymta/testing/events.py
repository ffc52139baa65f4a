"""Mail log lines as values, for tests that ask what the mail system did.

pymta logs each mail event as one Postfix-style line (``QID: to=<a@b>,
relay=virtual, ..., status=sent (delivered to maildir)``). A test rarely
wants the text: it wants "was alice's message delivered", "what was
rejected and why". :func:`parse_event` turns a line into a
:class:`MailEvent` with the service, the queue id and the ``name=value``
fields, the way log analysers read Postfix's log. Untrusted input: none
(the lines come from the server under test). Writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MailEvent", "parse_event", "parse_twistd_line"]

_QUEUE_ID = re.compile(r"^(?P<qid>[0-9A-Za-z]{6,}|NOQUEUE): ")
_FIELD = re.compile(r"(?<![\w.])(?P<name>[a-z_]+)=(?P<value><[^>]*>|\[[^\]]*\]|[^,\s]+)")
_STATUS_REASON = re.compile(r"status=\S+ \((?P<reason>.*)\)$")
# twistd's log line of a mail event: "TIME [pymta.maillog#LEVEL] service: text".
_TWISTD = re.compile(r"\[pymta\.maillog#(?P<level>\w+)\] (?P<service>[\w./-]+): (?P<text>.*)$")


@dataclass(frozen=True)
class MailEvent:
    """One mail log line: ``service`` (smtpd, qmgr, virtual, ...), the queue
    id (``NOQUEUE`` for a refusal before one existed, "" for none), the text
    after it, its ``name=value`` fields (angle brackets removed), and for a
    status line the reason in parentheses."""

    service: str
    queue_id: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)
    level: str = "info"

    @property
    def status(self) -> str:
        """``sent``, ``deferred``, ``bounced``, ``expired`` or ""."""
        return self.fields.get("status", "")

    @property
    def reason(self) -> str:
        match = _STATUS_REASON.search(self.text)
        return match.group("reason") if match else ""


def parse_event(service: str, text: str, level: str = "info") -> MailEvent:
    """A MailEvent from one mail log line's service and text."""
    queue_id = ""
    rest = text
    match = _QUEUE_ID.match(text)
    if match:
        queue_id = match.group("qid")
        rest = text[match.end() :]
    fields: dict[str, str] = {}
    for found in _FIELD.finditer(rest):
        value = found.group("value")
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        fields.setdefault(found.group("name"), value)
    return MailEvent(service, queue_id, rest, fields, level)


def parse_twistd_line(line: str) -> MailEvent | None:
    """The MailEvent of a twistd log line, or None for other lines."""
    match = _TWISTD.search(line.rstrip("\n"))
    if match is None:
        return None
    return parse_event(match.group("service"), match.group("text"), match.group("level"))
