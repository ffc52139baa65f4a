"""pymta.maillog: the events maillog() publishes and the lines MaillogObserver
writes from them."""

from __future__ import annotations

import io
import os
import time
from typing import Any

from twisted.logger import LogLevel, formatEvent

from pymta import maillog as maillog_module
from pymta.maillog import MaillogObserver, log_to, maillog


def _capture() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    return events, log_to(events.append)


def test_event_is_the_one_logger_emit_builds() -> None:
    """maillog() publishes exactly the keys and values twisted.logger's
    Logger.emit would (observers filter on namespace and level, twistd's
    log formats log_format), with log_time taken now."""
    events, undo = _capture()
    try:
        before = time.time()
        maillog("qmgr", "ABC123: removed", LogLevel.warn)
        after = time.time()
        maillog_module._log.emit(
            LogLevel.warn,
            "{service}: {text}",
            service="qmgr",
            text="ABC123: removed",
            pymta_maillog=True,
        )
    finally:
        undo()
    fast, reference = events
    assert before <= fast["log_time"] <= after
    fast.pop("log_time"), reference.pop("log_time")
    assert fast == reference
    assert formatEvent(fast) == "qmgr: ABC123: removed"


def test_observer_writes_syslog_lines() -> None:
    """MaillogObserver writes ``MMM DD HH:MM:SS host name/service[pid]: text``,
    with Postfix's ``warning:`` / ``error:`` prefixes, stamped with the
    event's own time."""
    stream = io.StringIO()
    observer = MaillogObserver(stream, "mx.example.org", now=lambda: 0.0, pid=42)
    undo = log_to(observer)
    try:
        maillog("smtpd", "connect from a[192.0.2.1]")
        maillog("qmgr", "Q1: cannot mark", LogLevel.warn)
        maillog("qmgr", "Q2: broken", LogLevel.error)
        maillog("smtpd", "disconnect from a[192.0.2.1]")
    finally:
        undo()
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(int(time.time())))
    lines = stream.getvalue().splitlines()
    assert [line.split(" mx ", 1)[1] for line in lines] == [
        "postfix/smtpd[42]: connect from a[192.0.2.1]",
        "postfix/qmgr[42]: warning: Q1: cannot mark",
        "postfix/qmgr[42]: error: Q2: broken",
        "postfix/smtpd[42]: disconnect from a[192.0.2.1]",
    ]
    assert lines[0].startswith(stamp[:6])


def test_lines_are_the_same_with_and_without_other_observers() -> None:
    """With maillog_file's observer alone on the publisher each line goes to
    it directly; with another observer added, both get every event: the
    file's lines are byte for byte the same either way, and the other
    observer misses nothing."""
    moment = 1_700_000_000.25
    saved = maillog_module._time
    maillog_module._time = lambda: moment
    try:
        texts = [("smtpd", "connect from a[192.0.2.1]", LogLevel.info)]
        texts += [("qmgr", "Q1: cannot mark", LogLevel.warn), ("bounce", "Q2: x", LogLevel.error)]
        alone, shared = io.StringIO(), io.StringIO()
        observer = MaillogObserver(alone, "mx.example.org", pid=7)
        undo = log_to(observer)
        try:
            assert maillog_module.publisher.line_writer is observer
            for service, text, level in texts:
                maillog(service, text, level)
        finally:
            undo()
        assert maillog_module.publisher.line_writer is None
        observer = MaillogObserver(shared, "mx.example.org", pid=7)
        seen: list[dict[str, Any]] = []
        undo = log_to(observer)
        maillog_module.publisher.addObserver(seen.append)
        try:
            assert maillog_module.publisher.line_writer is None
            for service, text, level in texts:
                maillog(service, text, level)
        finally:
            maillog_module.publisher.removeObserver(seen.append)
            undo()
    finally:
        maillog_module._time = saved
    assert alone.getvalue() == shared.getvalue()
    assert alone.getvalue().count("\n") == 3
    assert [(e["service"], e["text"], e["log_level"]) for e in seen] == texts


def test_the_writer_check_follows_twisteds_publisher() -> None:
    """The publisher keeps its own list of observers, as Twisted's does (no
    duplicates; removing an absent one is no error), so the direct-write
    check reads no private attribute of Twisted: the lines go straight
    to the file only while a MaillogObserver listens alone."""
    from twisted.logger import LogPublisher

    publisher = maillog_module._MaillogPublisher()
    observer = MaillogObserver(io.StringIO(), "mx.example.org", pid=7)
    publisher.addObserver(observer)
    publisher.addObserver(observer)
    assert publisher.line_writer is observer
    other: list[dict[str, Any]] = []
    publisher.addObserver(other.append)
    assert publisher.line_writer is None
    publisher.removeObserver(other.append)
    publisher.removeObserver(other.append)
    assert publisher.line_writer is observer
    publisher.removeObserver(observer)
    assert publisher.line_writer is None
    # What Twisted's own publisher delivers to agrees with the list kept.
    assert isinstance(publisher, LogPublisher)
    seen: list[dict[str, Any]] = []
    publisher.addObserver(seen.append)
    publisher({"log_format": "x"})
    assert len(seen) == 1


def _maillog_service(path: Any, clock: Any) -> Any:
    from pymta.assemble import MaillogService

    service = MaillogService(str(path), "mx.example.org", "postfix", clock)
    service.startService()
    return service


def test_maillog_file_lines_wait_for_company_then_go_in_one_write(tmp_path: Any) -> None:
    """maillog_file's lines are written FLUSH_SECONDS after the first of
    them, all in one append: nothing is in the file before, every line
    (in order, each stamped when it was logged) after, with no timer left."""
    from twisted.internet.task import Clock

    from pymta.master import appendlog

    clock = Clock()
    path = tmp_path / "maillog"
    writes: list[bytes] = []
    real_write = appendlog.os.write
    service = _maillog_service(path, clock)
    maillog_fd = service._stream._fd

    def counting_write(fd: int, data: bytes) -> int:
        if fd == maillog_fd:  # (os.write is everyone's meanwhile)
            writes.append(bytes(data))
        return real_write(fd, data)

    appendlog.os.write = counting_write  # type: ignore[attr-defined]
    try:
        maillog("smtpd", "connect from a[192.0.2.1]")
        clock.advance(maillog_module.FLUSH_SECONDS / 2)
        maillog("cleanup", "Q1: message-id=<x@y>")
        maillog("smtpd", "disconnect from a[192.0.2.1]")
        assert path.read_text() == ""
        clock.advance(maillog_module.FLUSH_SECONDS / 2)
        text = path.read_text()
        assert len(writes) == 1
        assert clock.getDelayedCalls() == []
        maillog("qmgr", "Q1: removed")
        assert len(clock.getDelayedCalls()) == 1  # the next batch's timer
        clock.advance(maillog_module.FLUSH_SECONDS)
        assert len(writes) == 2
    finally:
        appendlog.os.write = real_write  # type: ignore[attr-defined]
        service.stopService()
    assert [line.split(": ", 1)[1] for line in text.splitlines()] == [
        "connect from a[192.0.2.1]",
        "Q1: message-id=<x@y>",
        "disconnect from a[192.0.2.1]",
    ]
    assert path.read_text().endswith(f"postfix/qmgr[{os.getpid()}]: Q1: removed\n")


def test_maillog_file_stop_writes_the_waiting_lines(tmp_path: Any) -> None:
    """A stop (SIGTERM, a worker's end) writes the lines still waiting for
    FLUSH_SECONDS at once and cancels their timer."""
    from twisted.internet.task import Clock

    clock = Clock()
    path = tmp_path / "maillog"
    service = _maillog_service(path, clock)
    try:
        maillog("smtpd", "connect from a[192.0.2.1]")
        assert path.read_text() == ""
    finally:
        service.stopService()
    assert path.read_text().endswith("connect from a[192.0.2.1]\n")
    assert clock.getDelayedCalls() == []
