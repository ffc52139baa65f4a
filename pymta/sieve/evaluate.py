"""evaluate: one run of a user's compiled Sieve script against one message.

The part of Pigeonhole's LDA/LMTP plugin that both kinds of delivery
share: :class:`pymta.sieve.filter.SieveFilter` (virtual users and LMTP,
in the reactor's thread pool) and :mod:`pymta.sieve.local` (local(8)
users, in a child process running as the user). It builds the
interpreter's view of the message and envelope (the addresses that count
as the user's for ``vacation``, ``include`` resolved against the user's
``~/sieve/`` and ``pymta_sieve_global_dir``) and runs the script.

Imports nothing beyond the standard library and :mod:`pymta.sieve`'s
parser and interpreter (the local child loads it as the user). Untrusted
input: the script and the message. Blocking file I/O (``include`` and
``mailbox`` tests): callers run it off the reactor. Writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from pymta.sieve import storage
from pymta.sieve.grammar import Command
from pymta.sieve.interpret import Interpreter, Message, Outcome, SieveRuntimeError


@dataclass(frozen=True)
class ScriptLimits:
    """The Sieve parameters a run needs (see :class:`pymta.sieve.filter.SieveSettings`)."""

    global_dir: str = ""
    max_actions: int = 32
    max_redirects: int = 4
    delimiter: str = "+"


@dataclass(frozen=True)
class Delivery:
    """The message and envelope of one delivery, as a script sees them."""

    user: str
    home: str
    #: The header section (delivery headers first), LF line ends.
    head: bytes
    body: Callable[[], bytes]
    size: int
    sender: str
    recipient: str
    now: float
    mailbox_exists: Callable[[str], bool]
    #: Whether a vacation or duplicate tracking key is still remembered.
    seen: Callable[[str], bool]


def run_script(
    compiled: storage.Compiled,
    cache: storage.ScriptCache,
    limits: ScriptLimits,
    delivery: Delivery,
) -> tuple[Outcome | None, str | None]:
    """(outcome, None) when the script ran, (None, error) when it failed at
    run time (the caller keeps the message in INBOX and logs the error)."""
    assert compiled.commands is not None

    def include(location: str, script: str) -> list[Command] | None:
        if not storage.valid_name(script):
            return None
        if location == "global":
            if not limits.global_dir:
                return None
            file = os.path.join(limits.global_dir, script + storage.SUFFIX)
        else:
            file = storage.script_path(delivery.home, script)
        loaded = cache.load(file)
        if loaded is None:
            return None
        if loaded.commands is None:
            raise SieveRuntimeError(f"include {script}: {loaded.error}")
        return loaded.commands

    recipient = delivery.recipient
    user_addresses = tuple(
        {recipient.lower(), delivery.user.lower(), without_detail(recipient, limits.delimiter)}
    )
    msg = Message(
        header=header_block(delivery.head),
        body=delivery.body,
        size=delivery.size,
        envelope_from=delivery.sender,
        envelope_to=recipient,
        user_addresses=user_addresses,
        now=delivery.now,
        local_offset=int(time.localtime(delivery.now).tm_gmtoff),
        mailbox_exists=delivery.mailbox_exists,
        seen=delivery.seen,
        include=include,
        delimiter=limits.delimiter,
    )
    interpreter = Interpreter(msg, set(compiled.required), limits.max_actions, limits.max_redirects)
    try:
        return interpreter.run(compiled.commands), None
    except SieveRuntimeError as e:
        return None, f"runtime error: {e}"
    except RecursionError:
        return None, "runtime error: nested too deeply"


def header_block(content: bytes) -> bytes:
    """The header section of an LF-terminated message (without the blank line)."""
    if content.startswith(b"\n"):
        return b""
    end = content.find(b"\n\n")
    return content if end < 0 else content[: end + 1]


def without_detail(address: str, delimiter: str) -> str:
    """``user+detail@domain`` without its detail, lower case."""
    local, at, domain = address.lower().rpartition("@")
    if not at:
        return address.lower()
    for i, ch in enumerate(local):
        if delimiter and ch in delimiter and i > 0:
            return f"{local[:i]}@{domain}"
    return address.lower()
