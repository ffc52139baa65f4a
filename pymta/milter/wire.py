"""wire: the Sendmail milter protocol's packets, commands and replies.

Mirrors Postfix's milter8.c encoding (libmilter's mfdef.h names, protocol
version 6). A packet is a 4-byte big-endian length (counting the command
byte), one command byte and its data; strings are NUL-terminated.

:class:`PacketReader` splits the byte stream a milter sends into packets;
:func:`decode_reply` turns one packet into a typed :class:`Reply`. Both
treat their input as untrusted: anything that does not follow the
protocol (an oversized or truncated packet, an unknown reply code, a
missing NUL, a bad SMTP reply in SMFIR_REPLYCODE) raises
:class:`MilterProtocolError`, which the session answers with
``milter_default_action``. Nothing here does I/O or logs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

# Commands (client -> milter).
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# Replies (milter -> client).
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# Actions a milter may ask for (SMFIF_*), offered in SMFIC_OPTNEG.
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# Protocol steps a milter may skip (SMFIP_NO*) or not answer (SMFIP_NR_*).
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOMAIL = 0x4
SMFIP_NORCPT = 0x8
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
ALL_PROTOCOL = 0x1FFFFF

# Macro stages of SMFIR_SETSYMLIST (SMFIM_*).
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6

#: libmilter's MILTER_CHUNK_SIZE: the largest body packet sent.
CHUNK_SIZE = 65535
#: The largest packet accepted from a milter (libmilter's own limit is
#: larger; a REPLBODY chunk or a header fits well below this).
MAX_PACKET = 2 * 1024 * 1024

#: Replies that modify the message, allowed only in answer to end of body.
MODIFICATIONS = frozenset(
    (
        SMFIR_ADDRCPT,
        SMFIR_DELRCPT,
        SMFIR_ADDRCPT_PAR,
        SMFIR_REPLBODY,
        SMFIR_CHGFROM,
        SMFIR_ADDHEADER,
        SMFIR_INSHEADER,
        SMFIR_CHGHEADER,
        SMFIR_QUARANTINE,
    )
)
#: Replies that end a command's answer.
FINAL = frozenset(
    (
        SMFIR_ACCEPT,
        SMFIR_CONTINUE,
        SMFIR_DISCARD,
        SMFIR_REJECT,
        SMFIR_TEMPFAIL,
        SMFIR_REPLYCODE,
        SMFIR_SHUTDOWN,
        SMFIR_CONN_FAIL,
        SMFIR_SKIP,
    )
)

_REPLYCODE = re.compile(rb"\A([45])\d\d(?: |-|\Z)")


class MilterProtocolError(Exception):
    """The milter broke the protocol (the reason says how)."""


@dataclass(frozen=True)
class Reply:
    """One decoded reply: ``code`` is the SMFIR_* byte.

    ``text`` is the SMTP reply of SMFIR_REPLYCODE or the reason of
    SMFIR_QUARANTINE; ``name``/``value``/``index`` the header of the header
    actions; ``address``/``args`` the envelope address of the recipient and
    sender actions; ``body`` a REPLBODY chunk.
    """

    code: bytes
    text: str = ""
    name: str = ""
    value: str = ""
    index: int = 0
    address: str = ""
    args: str = ""
    body: bytes = b""


@dataclass(frozen=True)
class Negotiated:
    """The milter's answer to SMFIC_OPTNEG."""

    version: int
    actions: int
    protocol: int
    #: SMFIR_SETSYMLIST's macro lists by stage (SMFIM_*).
    macros: dict[int, list[str]]


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One packet: length, command byte, data."""
    return struct.pack("!I", len(data) + 1) + command + data


def cstring(text: str) -> bytes:
    """A NUL-terminated string (UTF-8; a NUL inside becomes a space)."""
    return text.replace("\0", " ").encode("utf-8", "surrogateescape") + b"\0"


def optneg(version: int, actions: int, protocol: int) -> bytes:
    return packet(SMFIC_OPTNEG, struct.pack("!III", version, actions, protocol))


def connect(hostname: str, address: str, port: int) -> bytes:
    """SMFIC_CONNECT: the family is '4', '6', or 'U' (unknown: no address)."""
    if not address or address == "unknown":
        return packet(SMFIC_CONNECT, cstring(hostname) + b"U")
    family = b"6" if ":" in address else b"4"
    bare = address.removeprefix("IPv6:")
    return packet(
        SMFIC_CONNECT,
        cstring(hostname) + family + struct.pack("!H", port & 0xFFFF) + cstring(bare),
    )


def macros(stage: bytes, pairs: list[tuple[str, str]]) -> bytes:
    """SMFIC_MACRO for the command ``stage``: name, value pairs."""
    data = b"".join(cstring(name) + cstring(value) for name, value in pairs)
    return packet(SMFIC_MACRO, stage + data)


def strings(command: bytes, *items: str) -> bytes:
    """A command whose data is NUL-terminated strings (HELO, MAIL, RCPT, HEADER)."""
    return packet(command, b"".join(cstring(item) for item in items))


def _strings(data: bytes, count: int, what: str) -> list[str]:
    """The first ``count`` NUL-terminated strings of ``data``."""
    parts = data.split(b"\0")
    if len(parts) <= count:
        raise MilterProtocolError(f"{what}: missing string terminator")
    return [p.decode("utf-8", "surrogateescape") for p in parts[:count]]


def _index(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise MilterProtocolError(f"{what}: truncated index")
    return struct.unpack("!I", data[:4])[0], data[4:]


def _address(text: str) -> str:
    """``<a@b>`` or ``a@b`` -> ``a@b`` (milters send either form)."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        return text[1:-1]
    return text


def decode_reply(command: bytes, data: bytes) -> Reply:
    """One milter reply packet -> Reply; MilterProtocolError when malformed."""
    if command in (
        SMFIR_ACCEPT,
        SMFIR_CONTINUE,
        SMFIR_DISCARD,
        SMFIR_REJECT,
        SMFIR_TEMPFAIL,
        SMFIR_PROGRESS,
        SMFIR_SHUTDOWN,
        SMFIR_CONN_FAIL,
        SMFIR_SKIP,
    ):
        return Reply(command)
    if command == SMFIR_REPLYCODE:
        (text,) = _strings(data, 1, "SMFIR_REPLYCODE")
        if not _REPLYCODE.match(text.encode("utf-8", "surrogateescape")):
            raise MilterProtocolError(f"SMFIR_REPLYCODE: not a 4xx/5xx reply: {text[:40]!r}")
        if any(c in text for c in "\r\n") and not _multiline_ok(text):
            raise MilterProtocolError("SMFIR_REPLYCODE: bad multi-line reply")
        return Reply(command, text=text)
    if command == SMFIR_QUARANTINE:
        (reason,) = _strings(data, 1, "SMFIR_QUARANTINE")
        return Reply(command, text=reason)
    if command == SMFIR_ADDHEADER:
        name, value = _strings(data, 2, "SMFIR_ADDHEADER")
        return Reply(command, name=_header_name(name), value=value)
    if command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        index, rest = _index(data, "header action")
        name, value = _strings(rest, 2, "header action")
        return Reply(command, name=_header_name(name), value=value, index=index)
    if command in (SMFIR_ADDRCPT, SMFIR_DELRCPT):
        (address,) = _strings(data, 1, "recipient action")
        return Reply(command, address=_address(address))
    if command in (SMFIR_ADDRCPT_PAR, SMFIR_CHGFROM):
        parts = data.split(b"\0")
        if len(parts) < 2:
            raise MilterProtocolError("envelope action: missing string terminator")
        address = _address(parts[0].decode("utf-8", "surrogateescape"))
        args = parts[1].decode("utf-8", "surrogateescape") if len(parts) > 2 else ""
        return Reply(command, address=address, args=args)
    if command == SMFIR_REPLBODY:
        return Reply(command, body=data)
    raise MilterProtocolError(f"unknown reply code {command!r}")


def _multiline_ok(text: str) -> bool:
    """Every line of a multi-line SMFIR_REPLYCODE carries the same code."""
    lines = text.replace("\r\n", "\n").split("\n")
    code = lines[0][:3]
    return all(line[:3] == code and line[3:4] in ("-", " ", "") for line in lines)


_HEADER_NAME = re.compile(r"\A[!-9;-~]+\Z")


def _header_name(name: str) -> str:
    # RFC 5322 2.2: printable ASCII but colon; a milter's bad name must not
    # corrupt the message's header.
    if not _HEADER_NAME.match(name):
        raise MilterProtocolError(f"bad header name {name[:40]!r}")
    return name


def decode_optneg(data: bytes) -> Negotiated:
    """The milter's SMFIC_OPTNEG reply (with its optional macro lists)."""
    if len(data) < 12:
        raise MilterProtocolError("SMFIC_OPTNEG reply too short")
    version, actions, protocol = struct.unpack("!III", data[:12])
    rest = data[12:]
    lists: dict[int, list[str]] = {}
    while rest:
        if len(rest) < 4:
            raise MilterProtocolError("SMFIC_OPTNEG: truncated macro list")
        stage = struct.unpack("!I", rest[:4])[0]
        end = rest.find(b"\0", 4)
        if end < 0:
            raise MilterProtocolError("SMFIC_OPTNEG: macro list without terminator")
        if stage > SMFIM_EOH:
            raise MilterProtocolError(f"SMFIC_OPTNEG: unknown macro stage {stage}")
        lists[stage] = rest[4:end].decode("ascii", "replace").split()
        rest = rest[end + 1 :]
    return Negotiated(version, actions, protocol, lists)


class PacketReader:
    """Split a byte stream into (command, data) packets."""

    def __init__(self, limit: int = MAX_PACKET) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Packets completed by ``data``; MilterProtocolError on a bad length."""
        self._buf += data
        out: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack("!I", self._buf[:4])
            if length < 1 or length > self._limit:
                raise MilterProtocolError(f"bad packet length {length}")
            if len(self._buf) < 4 + length:
                break
            command = bytes(self._buf[4:5])
            out.append((command, bytes(self._buf[5 : 4 + length])))
            del self._buf[: 4 + length]
        return out
