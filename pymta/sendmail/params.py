"""The few main.cf parameters sendmail needs, read without the full reader.

sendmail runs once per message, so its start-up time is its speed; the full
configuration reader (:class:`pymta.config.config.Config`, with the table
of every parameter) costs more than the rest of sendmail together. This
module reads ``DIR/main.cf`` in Postfix's syntax (``name = value``, lines
starting with white space continue the one before, ``#`` comment lines,
the last setting wins) and returns the parameters sendmail uses —
queue_directory, message_size_limit, authorized_submit_users — but only
when each is either absent (then Postfix's default) or a literal value
without ``$``. Anything else (an expansion, an odd size, an unreadable
file) returns None and sendmail uses the full reader, so that both paths
always agree. :func:`resolve_queue_directory` makes a relative
queue_directory absolute as sendmail and ``sendmail -bs`` must. Untrusted
input: none (main.cf). Reads main.cf; writes and
logs nothing.
"""

from __future__ import annotations

import os

#: The parameters sendmail uses, with Postfix's defaults (as pymta.config.defaults).
DEFAULTS = {
    "queue_directory": "/var/spool/postfix",
    "message_size_limit": "10240000",
    "authorized_submit_users": "static:anyone",
}


def read_fast(config_directory: str) -> dict[str, str] | None:
    """{name: value} for DEFAULTS' names, or None when the full reader is needed."""
    try:
        with open(os.path.join(config_directory, "main.cf"), encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    found: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if current is None:
                return None  # a continuation without a parameter: let the reader say so
            if current in DEFAULTS:
                found[current] += " " + stripped
            continue
        name, sep, value = line.partition("=")
        current = name.strip()
        if not sep or not current:
            return None
        if current in DEFAULTS:
            found[current] = value.strip()
    values = dict(DEFAULTS)
    values.update(found)
    if any("$" in value for value in values.values()):
        return None
    if not values["message_size_limit"].isdigit() or not values["queue_directory"]:
        return None
    return values


def resolve_queue_directory(queue_directory: str, config_directory: str) -> str:
    """An absolute queue directory. The embedded default's relative
    ``var/spool`` is relative to the directory twistd runs in, which holds
    ``etc/``: sendmail, run from anywhere, resolves it against the parent of
    the configuration directory."""
    if os.path.isabs(queue_directory):
        return queue_directory
    base = os.path.dirname(os.path.abspath(config_directory))
    return os.path.join(base, queue_directory)
