"""select_split_hook: time the first SELECT's steps inside twistd.

Loaded by bench/select_split.py as ``sitecustomize`` (its directory
first on twistd's PYTHONPATH): wraps the steps of a SELECT, in the
reactor and in the store's threads, and appends one line per call to
the file named by SELECT_SPLIT_LOG: ``name thread start end cpu``
(CLOCK_MONOTONIC seconds, comparable with the client's; the thread's
CPU seconds). Imports no reactor (pymta installs its own). Does nothing
without SELECT_SPLIT_LOG. Bench use only.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

LOG = os.environ.get("SELECT_SPLIT_LOG")


def _wrap(owner: Any, attribute: str, name: str) -> None:
    real = getattr(owner, attribute)

    @functools.wraps(real)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return real(*args, **kwargs)
        finally:
            end, cpu = time.monotonic(), time.thread_time() - cpu
            with open(LOG or os.devnull, "a") as f:
                f.write(f"{name} {threading.current_thread().name} {start} {end} {cpu}\n")

    setattr(owner, attribute, timed)


if LOG:
    from pymta.imap import mailbox_commands
    from pymta.mailstore import (
        asyncstore,
        folder_base,
        folder_read,
        folder_scan,
        index,
        maildir_folder,
    )

    _wrap(mailbox_commands, "_select", "command")
    _wrap(asyncstore.AsyncFolder, "rescan", "rescan-submitted")
    _wrap(folder_read.FolderRead, "rescan", "rescan-thread")
    _wrap(folder_scan, "list_columns", "list-parse-order")
    _wrap(folder_base.FolderBase, "_load_locked", "locked-index-load")
    _wrap(index.UidIndex, "create", "index-created")
    _wrap(index.Numbered, "lines", "index-lines")
    _wrap(index.UidIndex, "_append", "index-write-fsync")
    _wrap(maildir_folder.MaildirFolder, "summary", "summary")
    _wrap(mailbox_commands, "_selected", "answer-queued")
