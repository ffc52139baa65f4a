"""helper: the one process that keeps root, to become local recipients.

Mirrors the privileged half of Postfix's local(8) and pipe(8), split off
as DESIGN.md's "small privileged helper": started as root by
:func:`pymta.privsep.client.start_helper` before twistd drops to its ``-u``
user, it holds one end of a ``SOCK_SEQPACKET`` socketpair and nothing
else — no listening socket, no queue directory, no configuration. Only the
process that made the pair holds the other end, so only pymta's own
process can ask; the helper exits when that end closes (the server
stopped or died).

A request is one packet: a JSON object and, usually, one file descriptor
(the queue file, opened read-only by the asker, with the content's offset
and size). Two kinds:

- ``mailbox``: run :mod:`pymta.privsep.child` (this package's own source,
  never the asker's) as root; the child drops to the request's uid, gid and
  groups before it reads the message or opens the mailbox. As uid 0 it
  writes only root's mailboxes named on the helper's command line by the
  root parent (``mail_spool_directory/root``, root's ``home_mailbox``).
- ``command``: exec ``argv`` with the request's uid, gid and groups
  (subprocess: setgroups, setgid, setuid before exec); uid or gid 0 is
  refused whatever the asker says.

Each request runs in a thread of its own: the child's standard input gets
the request's prefix and the content slice, its output (first 2 KiB) and
exit status go back as one JSON packet. The time limit kills the child's
process group. Untrusted input: none parsed here beyond the JSON of
pymta's own process; the message is copied, never read. Writes nothing
itself. Logs nothing (errors go back as results).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PACKET_LIMIT = 1 << 20
OUTPUT_LIMIT = 2048
BLOCK = 65536
_CHILD_SOURCE = (Path(__file__).parent / "child.py").read_text(encoding="utf-8")
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
#: root's mailboxes (given on the command line by the root parent): the
#: only paths written as uid 0.
ROOT_MAILBOXES: set[str] = set()


def _normal(path: str) -> str:
    return os.path.normpath(path) if path else ""


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


def run(request: dict[str, Any], fd: int | None) -> dict[str, Any]:
    """Carry out one request; the result as a JSON-able dict."""
    kind = request.get("kind")
    uid, gid = int(request["uid"]), int(request["gid"])
    groups = [int(g) for g in request.get("groups", [gid])]
    first = request.get("prefix", "").encode("latin-1")
    kwargs: dict[str, Any] = {}
    if kind == "mailbox":
        child_request = dict(request.get("child", {}))
        if uid == 0 and _normal(str(child_request.get("path", ""))) not in ROOT_MAILBOXES:
            # As root only root's own mailbox, as configured when the helper
            # started: never a path the asker chose (/etc/cron.d/root...).
            return _result(None, None, b"refused: writes as root only to root's mailbox", False)
        child_request.update(uid=uid, gid=gid, groups=groups)
        first = json.dumps(child_request).encode() + b"\n" + first
        argv = [sys.executable, "-I", "-S", "-c", _CHILD_SOURCE]
        env = dict(_CHILD_ENV)
        cwd = "/"
    elif kind == "command":
        if uid == 0 or gid == 0:
            return _result(None, None, b"refused: commands never run as root", False)
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request.get("env", {}).items()}
        cwd = str(request.get("cwd", "/"))
        kwargs = {"user": uid, "group": gid, "extra_groups": groups}
    else:
        return _result(None, None, f"unknown request {kind!r}".encode(), False)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            **kwargs,
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
        if len(output) < OUTPUT_LIMIT:
            output += data[: OUTPUT_LIMIT - len(output)]
    status = process.wait()
    timer.cancel()
    feeder.join()
    if status < 0:
        return _result(None, -status, output, timed_out.is_set())
    return _result(status, None, output, timed_out.is_set())


def _result(code: int | None, sig: int | None, output: bytes, timed_out: bool) -> dict[str, Any]:
    return {
        "exit_code": code,
        "signal": sig,
        "output": output.decode("latin-1"),
        "timed_out": timed_out,
    }


def serve(sock: socket.socket) -> None:
    """Answer requests until the other end closes."""
    lock = threading.Lock()

    def answer(request: dict[str, Any], fd: int | None) -> None:
        try:
            result = run(request, fd)
        except Exception as e:  # a bad request must not kill the helper
            result = _result(None, None, f"helper error: {e}".encode(), False)
        result["id"] = request.get("id")
        with lock:
            try:
                sock.send(json.dumps(result).encode())
            except OSError:
                pass

    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, PACKET_LIMIT, 1)
        except InterruptedError:
            continue
        if not data:
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
        threading.Thread(target=answer, args=(request, fd), daemon=True).start()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's stop closes the socket
    sock = socket.socket(fileno=int(argv[1]))
    ROOT_MAILBOXES.update(_normal(path) for path in argv[2:] if path)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
