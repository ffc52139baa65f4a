"""header_addresses: canonical mapping and masquerading of header addresses.

Mirrors Postfix's cleanup_rewrite.c / cleanup_message.c header rewriting.
For mail from ``local_header_rewrite_clients`` (local submissions always),
the addresses in sender headers (From, Sender, Reply-To, Errors-To,
Return-Receipt-To, Resent-From, Resent-Sender, Resent-Reply-To) and
recipient headers (To, Cc, Bcc, Apparently-To, Resent-To, Resent-Cc,
Resent-Bcc) are put in standard form (``user`` becomes
``user@$myorigin``), mapped by ``sender_canonical_maps`` /
``recipient_canonical_maps`` and ``canonical_maps`` where their
``*_canonical_classes`` include header_sender / header_recipient, and
masqueraded where ``masquerade_classes`` says so.

``local_header_rewrite_clients`` takes ``permit_inet_interfaces`` (the
default: clients on our own addresses), ``permit_mynetworks``,
``permit_sasl_authenticated`` and ``static:all`` (every client). Mail
from other clients keeps its headers as sent (Postfix's
``remote_header_rewrite_domain`` is empty by default).

Only the address part changes: display names, comments, groups and
folding stay as they were. A header that cannot be parsed (an unbalanced
quote or bracket) is left as it is. Untrusted input: the headers.
Writes and logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pymta.config import Config, ConfigError
from pymta.netmatch import NetworkList

SENDER_HEADERS = frozenset(
    (
        b"from",
        b"sender",
        b"reply-to",
        b"errors-to",
        b"return-receipt-to",
        b"resent-from",
        b"resent-sender",
        b"resent-reply-to",
    )
)
RECIPIENT_HEADERS = frozenset(
    (b"to", b"cc", b"bcc", b"apparently-to", b"resent-to", b"resent-cc", b"resent-bcc")
)

Rewrite = Callable[[str], str]


class ClientRule:
    """local_header_rewrite_clients: whose headers are rewritten."""

    def __init__(self, config: Config) -> None:
        self.all = False
        self.inet_interfaces = False
        self.sasl = False
        self.mynetworks: NetworkList | None = None
        for item in config.get_list("local_header_rewrite_clients"):
            word = item.lower()
            if word == "static:all":
                self.all = True
            elif word == "permit_inet_interfaces":
                self.inet_interfaces = True
            elif word == "permit_mynetworks":
                self.mynetworks = NetworkList(config.get_list("mynetworks"))
            elif word == "permit_sasl_authenticated":
                self.sasl = True
            else:
                raise ConfigError(
                    f"{item!r} is not supported: expected permit_inet_interfaces, "
                    "permit_mynetworks, permit_sasl_authenticated or static:all",
                    parameter="local_header_rewrite_clients",
                )

    def applies(self, attributes: dict[str, str], local: bool, ours: bool) -> bool:
        """``local``: a local submission; ``ours``: the client is on our address."""
        if local or self.all:
            return True
        if self.inet_interfaces and ours:
            return True
        if self.sasl and attributes.get("sasl_username"):
            return True
        address = attributes.get("client_address", "")
        return self.mynetworks is not None and bool(address) and self.mynetworks.contains(address)


#: The usual value, one plain address alone (``<user@domain>`` or
#: ``user@domain``): no quotes, comments, groups, lists or folding. Its span
#: is the one _parse_addresses finds, without a step per character.
_SIMPLE = re.compile(r'[ \t]*(<)?([^\s<>()",;:\\@\[\]]+@[^\s<>()",;:\\@\[\]]+)(?(1)>)[ \t]*\Z')


def _addresses(value: str) -> list[tuple[int, int]] | None:
    """(start, end) of each address in an address-list value; None when it
    does not parse (see _parse_addresses)."""
    simple = _SIMPLE.match(value)
    if simple is not None:
        return [simple.span(2)]
    return _parse_addresses(value)


def _parse_addresses(value: str) -> list[tuple[int, int]] | None:
    """(start, end) of each address in an address-list value; None when it
    does not parse (unbalanced quotes, comments or brackets).

    Entries are split at top-level commas (and a group's ``name:`` and
    ``;``); an entry's address is what is inside its angle brackets (less
    a source route), else the entry itself without comments and spaces."""
    spans: list[tuple[int, int]] = []
    mask = list(value)  # the value with comments blanked out
    depth = 0
    in_quote = False
    angle_open = -1
    angle: tuple[int, int] | None = None
    entry = 0

    def close_entry(stop: int) -> None:
        if angle is not None:
            spans.append(angle)
            return
        text = "".join(mask[entry:stop])
        stripped = text.strip(" \t\r\n")
        if stripped and not any(c in stripped for c in " \t\r\n"):
            first = entry + len(text) - len(text.lstrip(" \t\r\n"))
            spans.append((first, first + len(stripped)))

    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif depth:
            mask[i] = " "
            if c == "\\" and i + 1 < n:
                i += 1
                mask[i] = " "
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == '"':
            in_quote = True
        elif c == "(":
            depth = 1
            mask[i] = " "
        elif c == "<":
            if angle_open >= 0:
                return None
            angle_open = i + 1
        elif c == ">":
            if angle_open < 0:
                return None
            start = angle_open
            colon = value.rfind(":", start, i)
            if value[start : start + 1] == "@" and colon >= 0:
                start = colon + 1  # a source route (<@a,@b:user@d>) keeps its route
            angle = (start, i) if start < i else None
            angle_open = -1
        elif angle_open < 0 and c in ",;":
            close_entry(i)
            entry, angle = i + 1, None
        elif angle_open < 0 and c == ":":
            entry, angle = i + 1, None  # a group's display name
        i += 1
    if in_quote or depth or angle_open >= 0:
        return None
    close_entry(n)
    return spans


def rewrite_value(value: str, rewrite: Rewrite) -> str:
    spans = _addresses(value)
    if not spans:
        return value
    out: list[str] = []
    last = 0
    for start, end in spans:
        address = value[start:end]
        new = rewrite(address)
        out.append(value[last:start])
        out.append(new)
        last = end
    out.append(value[last:])
    return "".join(out)


def rewrite_headers(message: bytes, sender: Rewrite | None, recipient: Rewrite | None) -> bytes:
    """The message with the addresses of its sender/recipient headers rewritten."""
    end = message.find(b"\n\n")
    head_end = len(message) if end < 0 else end + 1
    lines = message[:head_end].split(b"\n")
    headers: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1].append(line)
        else:
            headers.append([line])
    changed = False
    out: list[bytes] = []
    for header in headers:
        raw = b"\n".join(header)
        name, colon, rest = raw.partition(b":")
        key = name.strip().lower()
        rewrite = (
            sender if key in SENDER_HEADERS else recipient if key in RECIPIENT_HEADERS else None
        )
        if rewrite is not None and colon:
            text = rest.decode("utf-8", "surrogateescape")
            new = rewrite_value(text, rewrite)
            if new != text:
                raw = name + b":" + new.encode("utf-8", "surrogateescape")
                changed = True
        out.append(raw)
    if not changed:
        return message
    return b"\n".join(out) + message[head_end:]
