"""A loopback DNS server for end-to-end tests of the mail authentication checks.

Serves TXT and A records from a dict over UDP on 127.0.0.1, port 0 (the
kernel picks it; or another loopback host and port, e.g. 127.0.0.77:53 for
programs that only read /etc/resolv.conf), in a thread of the test process; every other name is
NXDOMAIN. Names in ``silent`` get no answer at all, so a resolver times out
(the temperror case). Built on dnspython's message codec.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class LoopbackDNS:
    def __init__(self, silent: Iterable[str] = (), host: str = "127.0.0.1", port: int = 0) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.silent = {n.lower().rstrip(".") for n in silent}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    def add(self, name: str, rrtype: str, value: str) -> None:
        self.records.setdefault((name.lower().rstrip("."), rrtype.upper()), []).append(value)

    def txt(self, name: str, value: str) -> None:
        """A TXT record; the value is cut into 255-byte strings as DNS carries it."""
        strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        self.add(name, "TXT", strings)

    def start(self) -> LoopbackDNS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        # shutdown() wakes the thread blocked in recvfrom (close() alone does
        # not, and the port would stay bound until it returned).
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stopped:
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = self._answer(query)
            if reply is not None:
                self._sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text(True).lower()
        if name in self.silent:
            return None
        rrtype = dns.rdatatype.to_text(question.rdtype)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        values = self.records.get((name, rrtype))
        if values:
            reply.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", rrtype, values))
        elif not any(key[0] == name for key in self.records):
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply
