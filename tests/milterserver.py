"""A small scripted milter for end-to-end tests, written from the protocol
description (libmilter's mfdef.h names; nothing of libmilter is used).

:class:`ScriptedMilter` listens on 127.0.0.1, port 0, in a thread of the
test process, answers SMFIC_OPTNEG with the actions and protocol flags it
is given, and answers every command from a script: ``replies`` maps a
command byte to the packets it answers with (default SMFIR_CONTINUE),
``rcpt_replies`` maps a recipient to its answer, ``eom`` lists the
modification packets sent before the final answer to end of message. It
records every packet it received (``seen``), so tests can check what pymta
sent (macros, headers, the body). ``mode = "garbage"`` answers end of
message with an unknown reply code; ``mode = "silent"`` never answers
MAIL FROM.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from typing import Any

from pymta.milter import wire


def reply(code: bytes, data: bytes = b"") -> bytes:
    return wire.packet(code, data)


def cstrings(*items: str) -> bytes:
    return b"".join(i.encode() + b"\0" for i in items)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def _read(self, sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def handle(self) -> None:
        milter = self.server.milter
        sock: socket.socket = self.request
        try:
            while True:
                (length,) = struct.unpack("!I", self._read(sock, 4))
                packet = self._read(sock, length)
                command, data = packet[:1], packet[1:]
                with milter.lock:
                    milter.seen.append((command, data))
                answer = milter.answer(command, data)
                if answer is None:
                    continue
                if answer == b"SILENT":
                    threading.Event().wait(60)
                    return
                sock.sendall(answer)
                if command == wire.SMFIC_QUIT:
                    return
        except (EOFError, OSError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    milter: ScriptedMilter


class ScriptedMilter:
    """See the module docstring."""

    def __init__(
        self,
        *,
        actions: int = wire.ALL_ACTIONS,
        protocol: int = 0,
        replies: dict[bytes, bytes] | None = None,
        rcpt_replies: dict[str, bytes] | None = None,
        eom: list[bytes] | None = None,
        mode: str = "",
    ) -> None:
        self.actions = actions
        self.protocol = protocol
        self.replies = replies or {}
        self.rcpt_replies = rcpt_replies or {}
        self.eom = eom or []
        self.mode = mode
        self.seen: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.milter = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> ScriptedMilter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commands(self) -> list[bytes]:
        with self.lock:
            return [c for c, _ in self.seen]

    def data_of(self, command: bytes) -> list[bytes]:
        with self.lock:
            return [d for c, d in self.seen if c == command]

    def answer(self, command: bytes, data: bytes) -> bytes | None:
        if command == wire.SMFIC_OPTNEG:
            return reply(wire.SMFIC_OPTNEG, struct.pack("!III", 6, self.actions, self.protocol))
        if command in (wire.SMFIC_MACRO, wire.SMFIC_ABORT):
            return None
        if command == wire.SMFIC_QUIT:
            return b""
        if command == wire.SMFIC_MAIL and self.mode == "silent":
            return b"SILENT"
        if command == wire.SMFIC_RCPT:
            address = data.split(b"\0")[0].decode().strip("<>")
            if address in self.rcpt_replies:
                return self.rcpt_replies[address]
        if command == wire.SMFIC_BODYEOB:
            if self.mode == "garbage":
                return reply(b"Z", b"nonsense")
            final = self.replies.get(command, reply(wire.SMFIR_CONTINUE))
            return b"".join(self.eom) + final
        return self.replies.get(command, reply(wire.SMFIR_CONTINUE))
