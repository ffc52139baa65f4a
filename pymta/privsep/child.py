"""child: the program that becomes a recipient and writes one message.

Mirrors the part of Postfix's local(8) that runs with the recipient's
privileges (mail_copy() after set_eugid()): mbox append under fcntl and
dot locks, Maildir delivery (tmp, fsync, rename into new, fsync). It is
started by :mod:`pymta.privsep.spawn` as ``python -I -S -c <this source>``
so that it needs nothing but the standard library and no file the
recipient could not read; started as root, it drops to the recipient
(setgroups, setgid, setuid) before it reads the message or opens a file.

It also reads, as the user, the files the root helper checks a .forward
delivery against (:func:`read_files`), and runs the user's active Sieve
script for a mailbox delivery (:func:`sieve`: only then does it load
more than the standard library, :mod:`pymta.sieve.local`).

Standard input: one JSON line (the request, from pymta: trusted), then the
message bytes (untrusted: copied, never interpreted, ``>From `` quoted in
mbox). Standard output: one line, ``<enhanced status> <text>`` (for
``sieve``, a JSON line of details after it); the exit status is 0
whenever that line was written. May write: the mailbox file or Maildir
named by the request, and ``<mbox>.lock`` (with a Sieve script also its
folders and the user's Sieve tracking file). Logs nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

BLOCK = 65536
STALE_LOCK_TIME = 500.0  # Postfix's stale_lock_time
REQUEST_LIMIT = 65536
#: The most of a .forward or :include: file that is read (Postfix reads
#: them line by line without a limit; 64 KiB is far more than any holds).
READ_LIMIT = 64 * 1024
#: A held mailbox lock is tried again this many times, LOCK_DELAY_FIRST
#: seconds apart at first, doubling up to LOCK_DELAY_MAX (about 15 s in all,
#: as Postfix's deliver_lock_attempts = 20 over deliver_lock_delay = 1s).
LOCK_ATTEMPTS = 20
LOCK_DELAY_FIRST = 0.02
LOCK_DELAY_MAX = 1.0


class Busy(Exception):
    """Another process holds the mailbox lock (nothing was written)."""


class Outcome(Exception):
    """Ends the delivery with one status line."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


def become(request: dict[str, Any]) -> None:
    """Take the recipient's identity for good; refuse to go on otherwise."""
    uid = request.get("uid")
    if uid is None:
        return
    gid = int(request["gid"])
    if os.geteuid() == 0:
        os.setgroups([int(g) for g in request.get("groups", [gid])])
        os.setgid(gid)
        os.setuid(int(uid))
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        raise Outcome("4.3.0", f"cannot become uid {uid} gid {gid}")


def _dotlock(path: str, now: float) -> str:
    lock = path + ".lock"
    for _attempt in (1, 2):
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return lock
        except FileExistsError:
            try:
                age = now - os.stat(lock).st_mtime
            except FileNotFoundError:
                continue
            if age <= STALE_LOCK_TIME:
                break
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        except PermissionError:
            raise Outcome("4.2.0", f"cannot create lock file {lock}: permission denied") from None
    raise Busy(f"cannot update mailbox {path}: mailbox busy ({lock} exists)")


def _quote(data: bytes) -> bytes:
    if data.startswith(b"From "):
        data = b">" + data
    return data.replace(b"\nFrom ", b"\n>From ")


def _copy_quoted(source: BinaryIO, fd: int) -> None:
    """The message with ``>From `` quoting (a line held back until it ends),
    then the blank line that ends an mbox record."""
    rest = b""
    last = b"\n"
    while True:
        block = source.read(BLOCK)
        if not block:
            break
        data = rest + block
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            _write(fd, _quote(data[:cut]))
            last = b"\n"
    if rest:
        _write(fd, _quote(rest))
        last = rest[-1:]
    _write(fd, b"\n" if last == b"\n" else b"\n\n")


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_mbox(request: dict[str, Any], source: BinaryIO) -> Outcome:
    """Append to the mbox, waiting a while for a lock another delivery or a
    mail reader holds (Postfix retries deliver_lock_attempts times,
    deliver_lock_delay apart, before it defers)."""
    delay = LOCK_DELAY_FIRST
    for _attempt in range(LOCK_ATTEMPTS - 1):
        try:
            return _append_mbox(request, source)
        except Busy:
            time.sleep(delay)
            delay = min(delay * 2, LOCK_DELAY_MAX)
    try:
        return _append_mbox(request, source)
    except Busy as e:
        raise Outcome("4.2.0", str(e)) from None


def _append_mbox(request: dict[str, Any], source: BinaryIO) -> Outcome:
    """One attempt; on any failure the file is cut back to its old size."""
    path = str(request["path"])
    now = float(request["time"])
    locks = request.get("locks", ["fcntl", "dotlock"])
    lock = _dotlock(path, now) if "dotlock" in locks else None
    try:
        try:
            # O_NOFOLLOW: a symlink planted as the mailbox is refused (Postfix
            # requires the mailbox to be a regular file owned by the recipient).
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise _os_outcome(e, f"cannot open mailbox {path}") from None
        try:
            info = os.fstat(fd)
            if not (info.st_mode & 0o170000 == 0o100000) or info.st_nlink != 1:
                raise Outcome("5.2.0", f"mailbox {path}: not a regular file with one link")
            if info.st_uid != os.geteuid():
                raise Outcome("5.2.0", f"mailbox {path}: not owned by uid {os.geteuid()}")
            if "fcntl" in locks:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EACCES):
                        raise Busy(f"cannot update mailbox {path}: mailbox busy") from None
                    raise
            start = info.st_size
            limit = int(request.get("size_limit", 0))
            try:
                stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(now))
                _write(fd, f"From {request.get('sender') or 'MAILER-DAEMON'}  {stamp}\n".encode())
                _copy_quoted(source, fd)
                if limit and os.fstat(fd).st_size > limit:
                    raise Outcome("5.2.2", f"mailbox {path}: size limit {limit} exceeded")
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
    finally:
        if lock is not None:
            try:
                os.unlink(lock)
            except OSError:
                pass
    return Outcome("2.0.0", f"delivered to mailbox {path}")


def deliver_maildir(request: dict[str, Any], source: BinaryIO) -> Outcome:
    """tmp/ (O_EXCL, 0600), fsync, rename into new/, fsync new/."""
    base = str(request["path"]).rstrip("/")
    try:
        for sub in ("", "/tmp", "/new", "/cur"):
            try:
                os.mkdir(base + sub, 0o700)
            except FileExistsError:
                pass
        now = time.time()
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        unique = f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}.{host}"
        tmp = f"{base}/tmp/{unique}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        size = lines = 0
        try:
            while True:
                block = source.read(BLOCK)
                if not block:
                    break
                _write(fd, block)
                size += len(block)
                lines += block.count(b"\n")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        # Dovecot's S= (size) and W= (size with CRLF line ends), as
        # pymta.mailstore.save names its files.
        final = f"{base}/new/{unique},S={size},W={size + lines}"
        os.rename(tmp, final)
        dfd = os.open(f"{base}/new", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise _os_outcome(e, f"cannot deliver to maildir {base}/") from None
    return Outcome("2.0.0", f"delivered to maildir {base}/")


def read_forward(paths: list[str], uid: int) -> tuple[str | None, str, list[str]]:
    """(path, text, warnings) of the first of paths that exists and passes
    Postfix's checks (dotforward.c): a regular file owned by uid, not
    writable by group or others, opened without following a final symlink
    and checked on the open descriptor, so that a link cannot make the
    reader read (and bounce back) a file the user may not read."""
    warnings: list[str] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            warnings.append(f"cannot open {path}: {e.strerror}")
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                warnings.append(f"file {path} is not a regular file; ignored")
                continue
            if info.st_uid != uid:
                warnings.append(f"file {path} has bad owner uid {info.st_uid}; ignored")
                continue
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                warnings.append(f"file {path} is group or world writable; ignored")
                continue
            data = os.read(fd, READ_LIMIT)
        finally:
            os.close(fd)
        return path, data.decode("utf-8", "replace"), warnings
    return None, "", warnings


def read_files(request: dict[str, Any]) -> Outcome:
    """The root helper's reads as the user: a .forward (``forward``: the
    candidate paths) or an ``:include:`` file (``include``); the answer is
    ``2.0.0`` and one JSON object."""
    if "forward" in request:
        path, text, warnings = read_forward([str(p) for p in request["forward"]], os.geteuid())
        answer: dict[str, Any] = {"path": path, "text": text, "warnings": warnings}
    else:
        try:
            with open(str(request["include"]), "rb") as f:
                answer = {"text": f.read(READ_LIMIT).decode("utf-8", "replace")}
        except OSError as e:
            answer = {"error": e.strerror or str(e), "errno": e.errno}
    return Outcome("2.0.0", json.dumps(answer))


#: Runs a user's script (:func:`pymta.sieve.local.deliver`, then its
#: answer_lines): (request, message) -> the output.
SieveRunner = Callable[[dict[str, Any], BinaryIO], str]


def load_sieve(request: dict[str, Any]) -> SieveRunner | None:
    """pymta's Sieve code, when the user may have an active script (one
    lstat of ``~/.dovecot.sieve``; the common answer is no and the child
    stays stdlib-only). Called before :func:`become`: the code is loaded
    with the identity that started the child (the root helper's own
    package, ``request["root"]``, and the interpreter's site-packages,
    which the user may not be able to read); the script runs after it."""
    home = str(request.get("home") or "")
    if not home or not os.path.lexists(os.path.join(home, ".dovecot.sieve")):
        return None
    import site

    site.main()  # -S left it out: the twisted the Maildir writer needs
    if str(request["root"]) not in sys.path:
        sys.path.insert(0, str(request["root"]))
    from pymta.sieve.local import answer_lines, deliver, preload

    preload()

    def mbox(record: dict[str, Any], data: BinaryIO) -> tuple[str, str]:
        try:
            done = append_mbox(record, data)
        except Outcome as e:
            done = e
        except OSError as e:
            done = _os_outcome(e, f"cannot deliver to mailbox {record['path']}")
        return done.status, done.text

    def run(request: dict[str, Any], source: BinaryIO) -> str:
        status, text, details = deliver(request, source.read(), mbox)
        return answer_lines(status, text, details)

    return run


def sieve(request: dict[str, Any], source: BinaryIO, runner: SieveRunner | None) -> str:
    """A mailbox delivery through the user's active Sieve script
    (``runner``, from :func:`load_sieve`); without one the plain mbox or
    Maildir write. The output: the status line and, after it, the details
    as one JSON line."""
    if runner is not None:
        return runner(request, source)
    if str(request["path"]).endswith("/"):
        outcome = deliver_maildir(request, source)
    else:
        outcome = append_mbox(request, source)
    return f"{outcome.status} {outcome.text}\n{{}}\n"


def _os_outcome(error: OSError, what: str) -> Outcome:
    # A full disk or quota is an operating condition: defer (Postfix's
    # mail_copy() does the same); a refused path is permanent.
    permanent = error.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.EISDIR)
    return Outcome("5.2.0" if permanent else "4.2.0", f"{what}: {error.strerror}")


def main() -> int:
    source = sys.stdin.buffer
    try:
        request = json.loads(source.readline(REQUEST_LIMIT))
        action = request.get("action")
        runner = load_sieve(request) if action == "sieve" else None
        become(request)
        if action == "mbox":
            outcome = append_mbox(request, source)
        elif action == "maildir":
            outcome = deliver_maildir(request, source)
        elif action == "read":
            outcome = read_files(request)
        elif action == "sieve":
            sys.stdout.write(sieve(request, source, runner))
            sys.stdout.flush()
            return 0
        else:
            outcome = Outcome("4.3.0", f"unknown request {action!r}")
    except Outcome as e:
        outcome = e
    except OSError as e:
        outcome = _os_outcome(e, "delivery failed")
    sys.stdout.write(f"{outcome.status} {outcome.text}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
