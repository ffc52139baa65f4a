"""helper: the one process that keeps root, to become local recipients.

Mirrors the privileged half of Postfix's local(8) and pipe(8), split off
as DESIGN.md's "small privileged helper": started as root by
:func:`pymta.privsep.client.start_helper` before twistd drops to its ``-u``
user, it holds one end of a ``SOCK_SEQPACKET`` socketpair, the name of the
configuration directory and its log file — no listening socket, no queue
directory. Only the process that made the pair (and the workers it hands a
connection to) holds the other end, so only pymta's own processes can ask;
the helper exits when that end closes (the server stopped or died).

The askers run as ``mail_owner`` and parse network input, so a request is
a claim, not an order: it carries only what the helper cannot know — the
recipient and why (:class:`pymta.privsep.interface.Grounds`), the /file or
|command it names, the envelope and, in one file descriptor, the queue
file (opened read-only by the asker, with the content's offset and size).
:class:`pymta.privsep.verify.Verifier` works out the rest from main.cf,
master.cf, passwd and the user's own files: who, which mailbox path, and
whether the file or command really is in the user's .forward (read as the
user) or the alias entry. Kinds:

- ``mailbox`` and ``file``: run :mod:`pymta.privsep.child` (this
  package's own source, never the asker's) as root; the child drops to
  the derived uid, gid and groups before it reads the message or opens
  the mailbox (a mailbox in a group-writable spool also gets the spool's
  group, for its dot lock).
- ``sieve``: a ``mailbox`` request through the user's active Sieve
  script: the same derived mailbox and identity, the script limits from
  main.cf; the child (as the user) runs the script
  (:mod:`pymta.sieve.local`) and its details line comes back for the
  agent (redirects and vacation replies to submit, warnings to log).
- ``forward``: the recipient's .forward text, read as the user, for the
  local agent (which may not read a 0700 home); no process of its own
  beyond the reading child.
- ``command`` (``/bin/sh -c``) and ``program`` (pipe(8)'s argv): exec with
  the derived identity (setgroups, setgid, setuid before exec), never uid
  or gid 0, with local(8)'s environment names only.

A refused request gets ``refused: why`` back and one warning line in the
helper's own log (the asker's log is not enough: it may be the
compromised one). Each request runs in a thread of its own: the child's
standard input gets the request's prefix and the content slice, its output
(first 2 KiB) and exit status go back as one JSON packet. The time limit
kills the child's process group. Untrusted input: the requests (checked
as above) and users' .forward files (read by a child as the user); the
message is copied, never read. Writes: its log. Logs: refusals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pymta.privsep.interface import UnixUser
from pymta.privsep.spawn import SIEVE_OUTPUT_LIMIT, sieve_request
from pymta.privsep.verify import Refused, Verifier

PACKET_LIMIT = 1 << 20
OUTPUT_LIMIT = 2048
BLOCK = 65536
_CHILD_SOURCE = (Path(__file__).parent / "child.py").read_text(encoding="utf-8")
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
#: How long reading a .forward or include file as its user may take.
READ_TIME_LIMIT = 60.0


def _feed(stdin: Any, first: bytes, fd: int | None, offset: int, size: int) -> None:
    try:
        stdin.write(first)
        if fd is not None:
            done = 0
            while done < size:
                block = os.pread(fd, min(BLOCK, size - done), offset + done)
                if not block:
                    break
                stdin.write(block)
                done += len(block)
    except (BrokenPipeError, OSError):
        pass  # the program exited without reading it all: its status says the rest
    finally:
        try:
            stdin.close()
        except OSError:
            pass
        if fd is not None:
            os.close(fd)


@dataclass(frozen=True)
class _Plan:
    """What one request runs: the program, its identity and surroundings."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    first: bytes
    identity: dict[str, Any]
    #: How much of the program's output goes back (a Sieve child's details
    #: line is longer than a status line).
    output_limit: int = OUTPUT_LIMIT


def plan(request: dict[str, Any], verifier: Verifier) -> _Plan:
    """What to run for one request (:class:`Refused` when it may not). The
    user, the mailbox path and whether a file or command may run come from
    ``verifier`` (:mod:`pymta.privsep.verify`), never from the request."""
    kind = request.get("kind")
    grounds = request.get("grounds")
    if not isinstance(grounds, dict):
        raise Refused("a request without grounds")
    first = str(request.get("prefix", "")).encode("latin-1")
    kwargs: dict[str, Any] = {}
    output_limit = OUTPUT_LIMIT
    if kind == "sieve":
        # A mailbox delivery through the user's Sieve script: the same
        # mailbox as "mailbox", the limits from our own main.cf.
        box = verifier.mailbox(grounds)
        runner, path = box.user, box.path
        groups = [] if path.endswith("/") else _spool_group(os.path.dirname(path))
        child = sieve_request(
            runner,
            path,
            str(request.get("sender", "")),
            float(request.get("time", 0.0)),
            box.locks,
            box.size_limit,
            verifier.sieve_settings(),
            str(grounds.get("recipient", "")),
        )
        output_limit = SIEVE_OUTPUT_LIMIT
    elif kind == "mailbox":
        box = verifier.mailbox(grounds)
        runner, path, groups = box.user, box.path, _spool_group(os.path.dirname(box.path))
        child = _mailbox_child(request, path, box.locks, box.size_limit)
    elif kind == "file":
        path = str(request.get("path", ""))
        runner, groups = verifier.file(grounds, path).runner, []
        if runner.uid == 0 or runner.gid == 0:
            raise Refused("files are never written as root")
        child = _mailbox_child(request, path, ["fcntl"], 0)
    if kind in ("mailbox", "file", "sieve"):
        child.update(_identity(runner, groups))
        first = json.dumps(child).encode() + b"\n" + first
        argv = [sys.executable, "-I", "-S", "-c", _CHILD_SOURCE]
        env = dict(_CHILD_ENV)
        cwd = "/"
    elif kind in ("command", "program"):
        if kind == "command":
            command = str(request.get("command", ""))
            how = verifier.command(grounds, command, dict(request.get("env", {})))
            argv = ["/bin/sh", "-c", command]
        else:
            argv = [str(a) for a in request.get("argv", [])]
            how = verifier.program(grounds, argv)
            argv[0] = _which(argv[0])
        runner, env, cwd = how.runner, how.env, how.cwd
        if runner.uid == 0 or runner.gid == 0:
            raise Refused("commands never run as root")
        kwargs = {"user": runner.uid, "group": runner.gid}
        kwargs["extra_groups"] = _identity(runner, [])["groups"]
    else:
        raise Refused(f"unknown request {kind!r}")
    return _Plan(argv, env, cwd, first, kwargs, output_limit)


def run(request: dict[str, Any], fd: int | None, planned: _Plan) -> dict[str, Any]:
    """Carry out one planned request; the result as a JSON-able dict."""
    argv, first = planned.argv, planned.first
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=planned.env,
            cwd=planned.cwd,
            start_new_session=True,
            close_fds=True,
            **planned.identity,
        )
    except OSError as e:
        if fd is not None:
            os.close(fd)
        return _result(None, None, f"cannot run {argv[0]}: {e.strerror}".encode(), False)
    feeder = threading.Thread(
        target=_feed,
        args=(process.stdin, first, fd, int(request.get("offset", 0)), int(request.get("size", 0))),
        daemon=True,
    )
    feeder.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass

    timer = threading.Timer(float(request.get("time_limit", 1000.0)), kill)
    timer.daemon = True
    timer.start()
    output = b""
    assert process.stdout is not None
    while True:
        data = os.read(process.stdout.fileno(), BLOCK)
        if not data:
            break
        if len(output) < planned.output_limit:
            output += data[: planned.output_limit - len(output)]
    status = process.wait()
    timer.cancel()
    feeder.join()
    if status < 0:
        return _result(None, -status, output, timed_out.is_set())
    return _result(status, None, output, timed_out.is_set())


def _mailbox_child(
    request: dict[str, Any], path: str, locks: list[str], size_limit: int
) -> dict[str, Any]:
    """The child's request for an mbox or Maildir write (Maildir: path ends in /)."""
    if path.endswith("/"):
        return {"action": "maildir", "path": path}
    return {
        "action": "mbox",
        "path": path,
        "sender": str(request.get("sender", "")),
        "time": float(request.get("time", 0.0)),
        "locks": locks,
        "size_limit": size_limit,
    }


def _identity(user: UnixUser, extra: list[int]) -> dict[str, Any]:
    groups = sorted(set(_user_groups(user)) | set(extra))
    return {"uid": user.uid, "gid": user.gid, "groups": groups}


def _user_groups(user: UnixUser) -> list[int]:
    try:
        return sorted(set(os.getgrouplist(user.name, user.gid)))
    except OSError:
        return [user.gid]


def _spool_group(directory: str) -> list[int]:
    """The group of a group-writable spool directory (Debian's ``mail``),
    which a mailbox write needs for its dot lock (as Debian's MUAs have)."""
    try:
        info = os.stat(directory)
    except OSError:
        return []
    if info.st_mode & stat.S_IWGRP and not info.st_mode & stat.S_IWOTH:
        return [info.st_gid]
    return []


def _which(name: str) -> str:
    """A pipe program's path (pipe(8) searches PATH for a bare name)."""
    if "/" in name:
        return name
    for directory in _CHILD_ENV["PATH"].split(":"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return name


def read_as(user: UnixUser, request: dict[str, Any]) -> dict[str, Any]:
    """Read files as user: the child (:func:`pymta.privsep.child.read_files`)
    drops to the user first; its JSON answer."""
    line = dict(request, action="read", **_identity(user, []))
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _CHILD_SOURCE],
        input=json.dumps(line).encode() + b"\n",
        capture_output=True,
        env=dict(_CHILD_ENV),
        cwd="/",
        timeout=READ_TIME_LIMIT,
        start_new_session=True,
    )
    status, _, text = done.stdout.decode("utf-8", "replace").partition("\n")[0].partition(" ")
    if status != "2.0.0":
        raise Refused(f"cannot read as {user.name}: {status} {text}".strip())
    answer: dict[str, Any] = json.loads(text)
    return answer


def _result(code: int | None, sig: int | None, output: bytes, timed_out: bool) -> dict[str, Any]:
    return {
        "exit_code": code,
        "signal": sig,
        "output": output.decode("latin-1"),
        "timed_out": timed_out,
    }


def serve(sock: socket.socket, verifier: Verifier, log: TextIO) -> None:
    """Answer requests until the other end closes; refusals are logged."""
    lock = threading.Lock()

    def answer(request: dict[str, Any], fd: int | None) -> None:
        if request.get("kind") == "forward":
            if fd is not None:
                os.close(fd)
            try:
                grounds = request.get("grounds")
                if not isinstance(grounds, dict):
                    raise Refused("a request without grounds")
                result = verifier.forward(grounds)
            except Exception as e:
                result = _refused(request, e, log)
            reply(request, result)
            return
        try:
            planned = plan(request, verifier)
        except Exception as e:  # a bad request must not kill the helper
            if fd is not None:
                os.close(fd)
            result = _refused(request, e, log)
        else:
            try:
                result = run(request, fd, planned)
            except Exception as e:
                result = _result(None, None, f"helper error: {e}".encode(), False)
        reply(request, result)

    def reply(request: dict[str, Any], result: dict[str, Any]) -> None:
        result["id"] = request.get("id")
        with lock:
            try:
                sock.send(json.dumps(result).encode())
            except OSError as e:  # too big for one packet (a .forward): say so
                error = _result(None, None, f"helper error: {e.strerror}".encode(), False)
                error["id"] = request.get("id")
                try:
                    sock.send(json.dumps(error).encode())
                except OSError:
                    pass

    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, PACKET_LIMIT, 1)
        except InterruptedError:
            continue
        if not data:
            sock.close()
            return
        fd = fds[0] if fds else None
        for extra in fds[1:]:
            os.close(extra)
        try:
            request = json.loads(data)
        except ValueError:
            if fd is not None:
                os.close(fd)
            continue
        if isinstance(request, dict) and request.get("kind") == "connect" and fd is not None:
            # A worker's connection (pymta.master.workers), handed over by a
            # process that holds one already: served like this one.
            try:
                worker = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                continue
            threading.Thread(target=serve, args=(worker, verifier, log), daemon=True).start()
            continue
        if not isinstance(request, dict):
            if fd is not None:
                os.close(fd)
            continue
        threading.Thread(target=answer, args=(request, fd), daemon=True).start()


def _refused(request: dict[str, Any], error: Exception, log: TextIO) -> dict[str, Any]:
    """The answer to a request that may not run, logged here: the asker
    may be the compromised process, so its own log is not enough."""
    why = str(error) if isinstance(error, Refused) else f"bad request: {error!r}"
    grounds = request.get("grounds")
    about = ""
    if isinstance(grounds, dict):
        whom = grounds.get("recipient") or grounds.get("service")
        about = f" ({grounds.get('reason')} for {whom})"
    kind = str(request.get("kind"))[:20]
    line = f"warning: local delivery helper refused a {kind} request{about}: {why}"
    line = "".join(c if c.isprintable() else "?" for c in line[:1000])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        log.write(f"{stamp} [pymta.privsep.helper#warn] {line}\n")
        log.flush()
    except (OSError, ValueError):
        pass
    result = _result(None, None, f"refused: {why}".encode("utf-8", "replace"), False)
    result["refused"] = True
    return result


def main(argv: list[str]) -> int:
    """``helper.py FD CONFIG_DIR [LOG_FILE]``: serve the socket FD with the
    configuration in CONFIG_DIR; refusals go to LOG_FILE (else standard error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's stop closes the socket
    sock = socket.socket(fileno=int(argv[1]))
    log: TextIO = sys.stderr
    if len(argv) > 3 and argv[3]:
        log = open(argv[3], "a", encoding="utf-8")
    serve(sock, Verifier(argv[2], read_as), log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
