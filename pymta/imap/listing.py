"""LIST and LSUB: wildcard matching and the attributes of each name.

RFC 3501 section 6.3.8 (``*`` matches anything, ``%`` anything but the
hierarchy separator; the reference name is prefixed to the pattern),
RFC 5258 LIST-EXTENDED basics (selection SUBSCRIBED, RETURN CHILDREN /
SUBSCRIBED / SPECIAL-USE), RFC 3348 CHILDREN (``\\HasChildren``,
``\\HasNoChildren``) and RFC 6154 SPECIAL-USE attributes. Patterns are
matched against the names as the client sees them (modified UTF-7), INBOX
case-insensitively. A parent that does not exist but has children that
match ``%`` is listed ``\\Noselect`` (``\\NonExistent`` for LIST-EXTENDED);
in LSUB, so is a parent that is not subscribed (RFC 3501 6.3.9).

Untrusted input: patterns (compiled to anchored regular expressions with
every other character escaped). Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pymta.mailstore.interface import SEPARATOR, FolderInfo
from pymta.mailstore.names import mutf7_encode

_SEP = SEPARATOR


def compile_pattern(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(_SEP) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _matches(regex: re.Pattern[str], wire: str) -> bool:
    if regex.match(wire):
        return True
    if wire.upper() == "INBOX":
        return bool(regex.match("INBOX")) or bool(
            re.compile(regex.pattern, re.IGNORECASE | re.DOTALL).match(wire)
        )
    return False


@dataclass(frozen=True)
class Entry:
    """One LIST answer: the wire name (mUTF-7, or Unicode for IMAP4rev2) and
    its attributes."""

    wire_name: str
    attributes: tuple[str, ...]
    #: RFC 5258 CHILDINFO ("SUBSCRIBED"): listed for a subscribed descendant.
    childinfo: bool = False


def list_entries(
    folders: list[FolderInfo],
    subscriptions: list[str],
    reference: str,
    patterns: list[str],
    *,
    subscribed_only: bool = False,
    return_subscribed: bool = False,
    extended: bool = False,
    encode: Callable[[str], str] = mutf7_encode,
    nonexistent: bool = False,
    recursive: bool = False,
) -> list[Entry]:
    """The answers to LIST (or LSUB, with subscribed_only) in folder order.
    ``encode`` gives the name the client sees: modified UTF-7, or the
    Unicode name itself for an IMAP4rev2 client (RFC 9051 5.1); with
    ``nonexistent`` (IMAP4rev2) a parent that is no folder is listed
    ``\\NonExistent \\HasChildren`` (RFC 9051 7.3.1: it implies \\Noselect).
    With ``recursive`` (RFC 5258 RECURSIVEMATCH, with ``subscribed_only``)
    a name that matches but is not subscribed is listed with CHILDINFO when
    it has a subscribed descendant that is not listed itself."""
    regexes = [compile_pattern(reference + p) for p in patterns]
    wire = {f.name: encode(f.name) for f in folders}
    exists = {f.name: f for f in folders}
    subscribed = {encode(n) for n in subscriptions}
    existing = set(wire.values())
    out: list[Entry] = []
    seen: set[str] = set()

    def attrs(info: FolderInfo | None, name: str) -> list[str]:
        result: list[str] = []
        if info is None:
            result.append("\\NonExistent" if extended else "\\Noselect")
            result.append("\\HasChildren")
        else:
            result.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
            if info.special_use:
                result.append(info.special_use)
        if (return_subscribed or subscribed_only) and name in subscribed and extended:
            result.append("\\Subscribed")
        return result

    candidates: list[tuple[str, FolderInfo | None]] = []
    if subscribed_only:
        by_wire = {wire[n]: exists[n] for n in exists}
        for name in sorted(subscribed, key=lambda n: (n.upper() != "INBOX", n)):
            candidates.append((name, by_wire.get(name)))
    else:
        for f in folders:
            candidates.append((wire[f.name], f))
    for name, info in candidates:
        if name in seen:
            continue
        if any(_matches(r, name) for r in regexes):
            seen.add(name)
            if subscribed_only and info is None and not extended:
                out.append(Entry(name, ()))
            else:
                out.append(Entry(name, tuple(attrs(info, name))))
            continue
        # A parent matched by "%" that is not a folder itself; for LSUB,
        # one that is not subscribed itself (RFC 3501 6.3.9: \Noselect).
        lsub = subscribed_only and not extended
        if subscribed_only and not lsub:
            continue  # LIST (SUBSCRIBED): parents only through RECURSIVEMATCH
        parts = name.split(_SEP)
        for i in range(1, len(parts)):
            parent = _SEP.join(parts[:i])
            if parent in seen or parent in (subscribed if lsub else existing):
                continue
            if any(_matches(r, parent) for r in regexes):
                seen.add(parent)
                if lsub:
                    out.append(Entry(parent, ("\\Noselect",)))
                    continue
                placeholder = "\\NonExistent" if nonexistent else "\\Noselect"
                out.append(Entry(parent, (placeholder, "\\HasChildren")))
    if recursive and subscribed_only:
        by_wire = {wire[n]: exists[n] for n in exists}
        for name in sorted(subscribed):
            if name in seen:
                continue  # listed itself: its parents need no CHILDINFO
            parts = name.split(_SEP)
            for i in range(1, len(parts)):
                parent = _SEP.join(parts[:i])
                if parent in seen or parent in subscribed:
                    continue
                if any(_matches(r, parent) for r in regexes):
                    seen.add(parent)
                    info = by_wire.get(parent)
                    kept = tuple(a for a in attrs(info, parent) if a != "\\Subscribed")
                    out.append(Entry(parent, kept, childinfo=True))
    return out
