"""qmgr log lines, in Postfix's exact format (log_adhoc.c), so pflogsumm reads them.

``QID: from=<sender>, size=N, nrcpt=N (queue active)``,
``QID: to=<rcpt>, orig_to=<orig>, relay=R, delay=D, delays=a/b/c/d,
dsn=X.Y.Z, status=sent|deferred|bounced (reason)``,
``QID: from=<sender>, status=expired, returned to sender`` and
``QID: removed``. Delays follow Postfix's formatting: whole seconds from 10 s
up, two significant digits below, never finer than 0.01 s, ``0`` when tiny.
"""

from __future__ import annotations

from pymta.maillog import maillog


def format_delay(seconds: float) -> str:
    """Postfix's PRETTY_FORMAT with two significant digits and 10 ms resolution."""
    if seconds < 0.005:
        return "0"
    if seconds >= 9.5:
        return str(int(seconds + 0.5))
    if seconds >= 0.995:
        text = f"{seconds:.1f}"
    else:
        text = f"{seconds:.2f}"
    text = text.rstrip("0").rstrip(".")
    return text or "0"


def log_active(queue_id: str, sender: str, size: int, nrcpt: int) -> None:
    maillog("qmgr", f"{queue_id}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)")


def log_delivery(
    service: str,
    queue_id: str,
    recipient: str,
    original: str,
    relay: str,
    delay: float,
    delays: tuple[float, float, float, float],
    dsn: str,
    status: str,
    reason: str,
) -> None:
    """One ``to=`` line; ``orig_to`` only when it differs (case-insensitively)."""
    parts = [f"{queue_id}: to=<{recipient}>"]
    if original and original.lower() != recipient.lower():
        parts.append(f"orig_to=<{original}>")
    parts.append(f"relay={relay}")
    parts.append(f"delay={format_delay(delay)}")
    a, b, c, d = delays
    parts.append(f"delays={format_delay(a)}/{format_delay(b)}/{format_delay(c)}/{format_delay(d)}")
    parts.append(f"dsn={dsn}")
    parts.append(f"status={status} ({reason})")
    maillog(service, ", ".join(parts))


def log_expired(queue_id: str, sender: str) -> None:
    maillog("qmgr", f"{queue_id}: from=<{sender}>, status=expired, returned to sender")


def log_removed(queue_id: str) -> None:
    maillog("qmgr", f"{queue_id}: removed")
