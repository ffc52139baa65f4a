"""Mail event lines of the admin commands, in the server's mail log.

Postfix's postsuper logs each action (``QID: removed``, ``QID: requeued``)
through syslog, so the mail log tells every change to the queue, whoever
made it. pymta's commands do the same into ``maillog_file``, with whole-line
``O_APPEND`` writes that interleave safely with a running server's lines.
Without ``maillog_file`` the server logs to twistd's log, which a command
cannot share: then the command's events are not kept.

Writes: ``maillog_file`` (created if missing). Untrusted input: none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymta.config import Config
from pymta.maillog import MaillogObserver, log_to


@contextmanager
def mail_events_to_log(config: Config) -> Iterator[None]:
    """While the block runs, maillog() lines go to ``maillog_file``."""
    path = config.get("maillog_file").strip()
    if not path:
        yield
        return
    from pymta.master.appendlog import AppendLineStream

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    stream: Any = AppendLineStream(path)
    undo = log_to(MaillogObserver(stream, config.get("myhostname"), config.get("syslog_name")))
    try:
        yield
    finally:
        undo()
        stream.close()
