"""Mail log events to metric observations: the mapping, with no state but one.

Every part already reports what it does as a Postfix-style mail log line
(:mod:`pymta.maillog`: events with the fields ``service`` and ``text``) or
as a Dovecot-style session line (pop3d and imapd: ``pymta_pop3`` /
``pymta_imap`` events with ``service`` and ``line``). Those lines are the
contract log tools (pflogsumm) already rely on, so metrics read them too
instead of adding counters inside each part. :class:`EventClassifier` turns
one event into zero or more :class:`Observation` values; it keeps one
bounded piece of state, the queue ids that smtpd named with ``client=``,
so that cleanup's ``message-id=`` line of the same message counts it as
received over SMTP (any other new queue file, a bounce or a local
submission, counts as ``local``).

Lines and what they count (``reason`` is the RFC 3463 subject of the
enhanced status code: address, mailbox, system, network, protocol,
content, policy, other):

- ``QID: message-id=<...>`` (cleanup): messages_received{origin}
- ``QID: to=<...>, relay=..., delay=D, ..., dsn=X.Y.Z, status=S (...)``
  (the delivery agent, or qmgr): messages_delivered{transport} /
  messages_deferred{transport,reason} / messages_bounced{transport,reason},
  one per recipient, and delivery_delay_seconds{status} observes D
- ``QID: from=<...>, status=expired, returned to sender``: messages_expired
- ``NOQUEUE: reject: STAGE from ...: 554 5.7.1 ...``: messages_rejected{stage,reason}
- ``Connection concurrency limit exceeded``: messages_rejected{stage=connect}
- ``CLIENT: SASL MECH authentication failed: WHY`` (smtpd):
  auth_failures{protocol=smtp}, unless WHY is ``temporary failure``
- ``V TLS connection established to HOST: ...`` (smtp client):
  outbound_tls_sessions{transport,trust}
- ``pop3-login: Login:`` / ``imap-login: Login:``: logins{protocol}
- ``...-login: Disconnected (auth failed, N attempts ...)``:
  auth_failures{protocol} += N (Dovecot logs no line per failed attempt;
  failed attempts of a session that then logged in are not counted)
- ``process pymta/worker pid N exit status ...`` (master): the worker died
  (its live gauges are dropped, see :mod:`pymta.metrics`)

Untrusted: the text carries addresses and remote replies from the network;
only fixed-form fields are read (labels come from closed sets or from
master.cf service names, never from the text of a reply).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: RFC 3463 section 3: the subject digit of an enhanced status code.
REASON_CLASSES: Mapping[str, str] = {
    "0": "other",
    "1": "address",
    "2": "mailbox",
    "3": "system",
    "4": "network",
    "5": "protocol",
    "6": "content",
    "7": "policy",
}

#: smtpd stages as Postfix's log_whatsup names them; anything else is "other".
REJECT_STAGES = frozenset(
    {"connect", "helo", "ehlo", "mail", "rcpt", "data", "end-of-message", "vrfy", "etrn", "bdat"}
)

#: Queue ids remembered between ``client=`` and ``message-id=`` (bounded:
#: a message whose queue file was never written leaves its id behind).
PENDING_CLIENT_LIMIT = 10000

_STATUS = re.compile(
    r"^[0-9A-Za-z]+: to=<.*?>, (?:orig_to=<.*?>, )?relay=[^,\s]*, "
    r"delay=(?P<delay>\d+(?:\.\d+)?), delays=[0-9./]+, "
    r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}), status=(?P<status>sent|deferred|bounced) "
)
_EXPIRED = re.compile(r"^[0-9A-Za-z]+: from=<.*>, status=expired, returned to sender$")
_MESSAGE_ID = re.compile(r"^(?P<qid>[0-9A-Za-z]+): message-id=")
_CLIENT = re.compile(r"^(?P<qid>[0-9A-Za-z]+): client=")
_REJECT = re.compile(
    r"^NOQUEUE: reject: (?P<stage>[A-Za-z-]+) from \S*?: [45]\d\d (?P<dsn>[45]\.\d{1,3}\.\d{1,3}) "
)
_CONCURRENCY = re.compile(r"^Connection concurrency limit exceeded: ")
_SASL_FAILED = re.compile(r"SASL \S+ authentication failed")
#: smtpd's reason when the password check itself failed (not the client's fault).
_TEMPORARY = ": temporary failure"
_TLS_OUT = re.compile(
    r"^(?P<trust>Anonymous|Untrusted|Trusted|Verified) TLS connection established to "
)
_LOGIN = re.compile(r"^(?:pop3|imap)-login: Login: ")
_LOGIN_FAILED = re.compile(
    r"^(?:pop3|imap)-login: Disconnected \(auth failed, (?P<attempts>\d+) attempts? "
)
_WORKER_EXIT = re.compile(r"^process \S+ pid (?P<pid>\d+) (?:exit status|killed by signal)")


@dataclass(frozen=True)
class Observation:
    """One change to one metric: a counter's increment or a histogram's value.

    ``metric`` names a family of :class:`pymta.metrics.families.MailMetrics`
    (``process_exited`` is not a metric: its value is the pid of a dead
    worker).
    """

    metric: str
    labels: tuple[tuple[str, str], ...] = ()
    value: float = 1.0

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def reason_class(dsn: str) -> str:
    """The RFC 3463 subject class of an enhanced status code, ``other`` if unknown."""
    parts = dsn.split(".")
    if len(parts) != 3:
        return "other"
    return REASON_CLASSES.get(parts[1], "other")


@dataclass
class EventClassifier:
    """Turns twisted.logger events into observations (see the module doc)."""

    _clients: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def classify(self, event: Mapping[str, Any]) -> list[Observation]:
        """The observations one log event makes (most events make none)."""
        if event.get("pymta_maillog"):
            return self._maillog(str(event.get("service", "")), str(event.get("text", "")))
        if event.get("pymta_pop3"):
            return self._session_line("pop3", str(event.get("line", "")))
        if event.get("pymta_imap"):
            return self._session_line("imap", str(event.get("line", "")))
        return []

    def _maillog(self, service: str, text: str) -> list[Observation]:
        match = _STATUS.match(text)
        if match:
            return self._status(service, match)
        if service == "cleanup":
            match = _MESSAGE_ID.match(text)
            if match:
                qid = match["qid"]
                origin = "smtp" if qid in self._clients else "local"
                self._clients.pop(qid, None)
                return [Observation("messages_received", (("origin", origin),))]
            return []
        if service == "master":
            match = _WORKER_EXIT.match(text)
            if match:
                return [Observation("process_exited", (), float(match["pid"]))]
            return []
        match = _CLIENT.match(text)
        if match:
            self._clients[match["qid"]] = None
            while len(self._clients) > PENDING_CLIENT_LIMIT:
                self._clients.popitem(last=False)
            return []
        match = _REJECT.match(text)
        if match:
            stage = match["stage"].lower()
            labels = (
                ("stage", stage if stage in REJECT_STAGES else "other"),
                ("reason", reason_class(match["dsn"])),
            )
            return [Observation("messages_rejected", labels)]
        if _CONCURRENCY.match(text):
            return [Observation("messages_rejected", (("stage", "connect"), ("reason", "policy")))]
        if _EXPIRED.match(text):
            return [Observation("messages_expired")]
        match = _TLS_OUT.match(text)
        if match:
            labels = (("transport", service), ("trust", match["trust"].lower()))
            return [Observation("outbound_tls_sessions", labels)]
        if service == "smtpd" and _SASL_FAILED.search(text) and not text.endswith(_TEMPORARY):
            return [Observation("auth_failures", (("protocol", "smtp"),))]
        return []

    def _status(self, transport: str, match: re.Match[str]) -> list[Observation]:
        status = match["status"]
        delay = Observation("delivery_delay_seconds", (("status", status),), float(match["delay"]))
        if status == "sent":
            counted = Observation("messages_delivered", (("transport", transport),))
        else:
            labels = (("transport", transport), ("reason", reason_class(match["dsn"])))
            counted = Observation(f"messages_{status}", labels)
        return [counted, delay]

    def _session_line(self, protocol: str, line: str) -> list[Observation]:
        if _LOGIN.match(line):
            return [Observation("logins", (("protocol", protocol),))]
        match = _LOGIN_FAILED.match(line)
        if match:
            attempts = int(match["attempts"])
            if attempts:
                return [Observation("auth_failures", (("protocol", protocol),), float(attempts))]
        return []
