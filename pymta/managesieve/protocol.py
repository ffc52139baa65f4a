"""The ManageSieve server protocol (RFC 5804): one connection.

Mirrors Pigeonhole's managesieve: CAPABILITY, STARTTLS, AUTHENTICATE
PLAIN (with or without an initial response), LOGOUT, NOOP, UNAUTHENTICATE,
HAVESPACE, PUTSCRIPT, CHECKSCRIPT, LISTSCRIPTS, SETACTIVE, GETSCRIPT,
DELETESCRIPT, RENAMESCRIPT. Arguments are atoms, quoted strings and
literals (``{n+}`` and ``{n}``, no continuation: RFC 5804 section 1.4).
Everything read here is untrusted network input.

Authentication goes through the same passwd-file checker as IMAP and POP3
(its failure delays included, :mod:`pymta.auth`), over TLS or from a
network allowed plaintext logins (``imapd_plaintext_auth_networks``,
loopback always); without either, SASL is not offered and AUTHENTICATE is
refused (``NO (ENCRYPT-NEEDED)``). Scripts are checked by pymta's own
Sieve checker before they are stored (PUTSCRIPT answers the first error
with its line); storage is :mod:`pymta.managesieve.scripts`, run in the
reactor's thread pool.

Limits: a script (literal) of at most ``pymta_sieve_max_script_size``
bytes (larger: ``NO (QUOTA/MAXSIZE)``, the literal is read and dropped);
command lines of at most 8 KiB; 10 bad commands and 3 failed logins end
the session; ``pymta_managesieve_timeout`` of silence ends it (``BYE``).
Logs: ``managesieved: login: user=<...>``, script changes, failures.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from pymta.auth.credentials import PasswordCredentials
from pymta.auth.errors import AuthTemporaryError, TooManyLoginAttempts
from pymta.maillog import maillog
from pymta.managesieve.scripts import ScriptError, ScriptStore
from pymta.sieve.check import EXTENSIONS
from pymta.sieve.filter import RunInThread
from pymta.sieve.storage import compile_text


class ManageSieveHost(TypingProtocol):
    """What a session uses of its factory (pymta.managesieve.factory's
    ManageSieveFactory satisfies it; the factory module imports this one)."""

    checker: Any
    clock: IReactorTime
    run_in_thread: RunInThread
    tls: Any
    timeout: float
    max_script_size: int
    max_redirects: int

    def plaintext_allowed(self, ip: str) -> bool: ...

    def home_for(self, user: str) -> str | None: ...


_log = Logger()

MAX_LINE = 8192
MAX_BAD_COMMANDS = 10
MAX_AUTH_FAILURES = 3
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n")
_ATOM = re.compile(rb"[^ \r\n\"{}()\x00-\x1f\x7f]+")

_NOT_AUTH = 0
_AUTH = 1
_CLOSED = 2


class SyntaxProblem(Exception):
    pass


class TooLarge(Exception):
    def __init__(self, skip_from: int, size: int) -> None:
        self.skip_from = skip_from
        self.size = size


Arg = str | bytes  # atoms are str, strings bytes


def parse_command(buf: bytes, max_literal: int) -> tuple[list[Arg], int] | None:
    """One command line's arguments and the bytes it took, or None when
    more input is needed; SyntaxProblem, or TooLarge for a literal over
    ``max_literal`` (its size and where its octets start)."""
    args: list[Arg] = []
    pos, end = 0, len(buf)
    while True:
        while pos < end and buf[pos] == 0x20:
            pos += 1
        if pos >= end:
            return None
        if buf.startswith(b"\r\n", pos) or buf[pos] == 0x0A:
            return args, pos + (2 if buf[pos] == 0x0D else 1)
        c = buf[pos]
        if c == 0x22:  # quoted string
            out = bytearray()
            i = pos + 1
            while i < end:
                ch = buf[i]
                if ch == 0x5C and i + 1 < end:
                    out.append(buf[i + 1])
                    i += 2
                    continue
                if ch == 0x22:
                    break
                if ch in (0x0D, 0x0A):
                    raise SyntaxProblem("line end inside a quoted string")
                out.append(ch)
                i += 1
            else:
                if end - pos > MAX_LINE:
                    raise SyntaxProblem("line too long")
                return None
            args.append(bytes(out))
            pos = i + 1
        elif c == 0x7B:  # literal
            m = _LITERAL.match(buf, pos)
            if m is None:
                if b"\n" in buf[pos : pos + 20] or end - pos >= 20:
                    raise SyntaxProblem("bad literal")
                return None
            size = int(m.group(1))
            if size > max_literal:
                raise TooLarge(m.end(), size)
            if m.end() + size > end:
                return None
            args.append(buf[m.end() : m.end() + size])
            pos = m.end() + size
        else:
            m = _ATOM.match(buf, pos)
            if m is None:
                raise SyntaxProblem("unexpected character")
            args.append(m.group().decode("ascii", "replace"))
            pos = m.end()


def quoted(value: str | bytes) -> bytes:
    """A string as the server sends it: quoted when it can be, else a literal."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) < 1024 and not re.search(rb'[\r\n"\\\x00]', data):
        return b'"' + data + b'"'
    return b"{%d}\r\n" % len(data) + data


class ManageSieveProtocol(Protocol):
    """One ManageSieve session."""

    def __init__(self, factory: ManageSieveHost) -> None:
        self.factory = factory
        self._buffer = b""
        self._state = _NOT_AUTH
        self._busy = False
        self._skip = 0  # octets of an oversized literal still to drop
        self._skip_line = False
        self._tls = False
        self._client_ip = ""
        self._user = ""
        self._store: ScriptStore | None = None
        self._bad = 0
        self._auth_failures = 0
        self._sasl: Callable[[bytes], None] | None = None
        self._timer: IDelayedCall | None = None

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self._client_ip = str(getattr(peer, "host", ""))
        self._send(self._capabilities() + b'OK "pymta ManageSieve ready."\r\n')
        self._touch()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._state = _CLOSED
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _touch(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.factory.timeout)
        else:
            self._timer = self.factory.clock.callLater(self.factory.timeout, self._timed_out)

    def _timed_out(self) -> None:
        if self._busy:
            self._touch()
            return
        self._bye("Disconnected for inactivity.")

    def _send(self, data: bytes) -> None:
        if self._state != _CLOSED:
            self.transport.write(data)  # type: ignore[union-attr]

    def _ok(self, text: str = "Done.", code: str = "") -> None:
        prefix = f"OK ({code}) " if code else "OK "
        self._send(prefix.encode() + quoted(text) + b"\r\n")

    def _no(self, text: str, code: str = "") -> None:
        prefix = f"NO ({code}) " if code else "NO "
        self._send(prefix.encode() + quoted(text) + b"\r\n")

    def _bye(self, text: str) -> None:
        self._send(b"BYE " + quoted(text) + b"\r\n")
        self._state = _CLOSED
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _bad_command(self, text: str) -> None:
        self._bad += 1
        if self._bad >= MAX_BAD_COMMANDS:
            self._bye("Too many invalid commands.")
        else:
            self._no(text)

    def _plaintext_allowed(self) -> bool:
        return self._tls or self.factory.plaintext_allowed(self._client_ip)

    def _capabilities(self) -> bytes:
        f = self.factory
        lines = [
            b'"IMPLEMENTATION" "pymta"',
            b'"SIEVE" ' + quoted(" ".join(sorted(e for e in EXTENSIONS if "comparator-" not in e))),
            b'"MAXREDIRECTS" "%d"' % f.max_redirects,
            b'"VERSION" "1.0"',
        ]
        if self._state == _NOT_AUTH and self._plaintext_allowed():
            lines.append(b'"SASL" "PLAIN"')
        elif self._state == _NOT_AUTH:
            lines.append(b'"SASL" ""')
        if f.tls is not None and not self._tls and self._state == _NOT_AUTH:
            lines.append(b'"STARTTLS"')
        return b"".join(line + b"\r\n" for line in lines if line)

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        self._touch()
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while self._state != _CLOSED and not self._busy:
            if self._skip:
                dropped = min(self._skip, len(self._buffer))
                self._buffer = self._buffer[dropped:]
                self._skip -= dropped
                if self._skip:
                    return
                self._skip_line = True
            if self._skip_line:
                end = self._buffer.find(b"\n")
                if end < 0:
                    self._buffer = self._buffer[-1:]
                    return
                self._buffer = self._buffer[end + 1 :]
                self._skip_line = False
                continue
            try:
                parsed = parse_command(self._buffer, self.factory.max_script_size)
            except TooLarge as e:
                self._buffer = self._buffer[e.skip_from :]
                self._skip = e.size
                self._no("Script is too large.", "QUOTA/MAXSIZE")
                continue
            except SyntaxProblem as e:
                self._skip_line = True
                self._bad_command(f"Syntax error: {e}.")
                continue
            if parsed is None:
                if len(self._buffer) > MAX_LINE and b"{" not in self._buffer[:MAX_LINE]:
                    self._skip_line = True
                    self._bad_command("Line too long.")
                    continue
                return
            args, used = parsed
            self._buffer = self._buffer[used:]
            if self._sasl is not None:
                step, self._sasl = self._sasl, None
                first = args[0] if args else b""
                step(first if isinstance(first, bytes) else first.encode())
                continue
            if not args or not isinstance(args[0], str):
                self._bad_command("Expected a command.")
                continue
            self._command(args[0].upper(), args[1:])

    def _command(self, name: str, args: list[Arg]) -> None:
        handler = getattr(self, f"do_{name.lower()}", None)
        if handler is None:
            self._bad_command(f"Unknown command {name[:30]}.")
            return
        needs_auth = name not in ("CAPABILITY", "STARTTLS", "AUTHENTICATE", "LOGOUT", "NOOP")
        if needs_auth and self._state != _AUTH:
            self._bad_command("Authenticate first.")
            return
        if name in ("AUTHENTICATE", "STARTTLS") and self._state == _AUTH:
            self._bad_command("Already authenticated.")
            return
        strings: list[bytes] = []
        for arg in args:
            if not isinstance(arg, bytes):
                if name == "HAVESPACE" and arg.isdigit():
                    strings.append(arg.encode())
                    continue
                self._bad_command(f"{name}: expected strings.")
                return
            strings.append(arg)
        try:
            handler(strings)
        except (UnicodeDecodeError, IndexError, ValueError):
            self._bad_command(f"{name}: bad arguments.")

    def _later(self, work: Callable[[], Any], done: Callable[[Any], None], what: str) -> None:
        """Run file work off the reactor; read nothing more until it is done."""
        self._busy = True

        def finished(result: object) -> None:
            self._busy = False
            if self._state == _CLOSED:
                return
            if isinstance(result, Failure):
                if isinstance(result.value, ScriptError):
                    self._no(result.value.text, result.value.code)
                elif isinstance(result.value, OSError):
                    maillog(
                        "managesieved",
                        f"warning: {self._user}: {what}: {result.value}",
                    )
                    self._no("Cannot access the script storage.", "TRYLATER")
                else:
                    _log.failure("managesieve {what} failed", result, what=what)
                    self._no("Internal error.", "TRYLATER")
            else:
                done(result)
            self._process()

        self.factory.run_in_thread(work).addBoth(finished)

    # -- commands before login ----------------------------------------------------

    def do_capability(self, args: list[bytes]) -> None:
        self._send(self._capabilities())
        self._ok("Capability completed.")

    def do_noop(self, args: list[bytes]) -> None:
        if args:
            self._send(b"OK (TAG " + quoted(args[0]) + b') "Done."\r\n')
        else:
            self._ok("NOOP completed.")

    def do_logout(self, args: list[bytes]) -> None:
        self._ok("Logout completed.")
        self._state = _CLOSED
        self.transport.loseConnection()  # type: ignore[union-attr]

    def do_starttls(self, args: list[bytes]) -> None:
        if self.factory.tls is None or self._tls:
            self._bad_command("TLS is not available." if not self._tls else "TLS is active.")
            return
        self._ok("Begin TLS negotiation now.")
        self._buffer = b""  # CVE-2011-0411: nothing sent before TLS is a command
        self.transport.startTLS(self.factory.tls)  # type: ignore[union-attr]
        self._tls = True
        # RFC 5804 section 2.2: the capabilities again, under TLS.
        self._send(self._capabilities() + b'OK "TLS negotiation successful."\r\n')

    def do_authenticate(self, args: list[bytes]) -> None:
        if not args or args[0].upper() != b"PLAIN":
            self._no("Unsupported authentication mechanism.")
            return
        if not self._plaintext_allowed():
            self._no("Plaintext authentication disallowed without TLS.", "ENCRYPT-NEEDED")
            return
        if len(args) >= 2:
            self._auth_plain(args[1])
        else:
            self._send(b'""\r\n')
            self._sasl = self._auth_plain

    def _auth_plain(self, encoded: bytes) -> None:
        if encoded.strip() == b"*":
            self._no("Authentication aborted.")
            return
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
            authzid, user, password = (p.decode("utf-8") for p in decoded.split(b"\0"))
        except (binascii.Error, ValueError):
            self._no("Invalid base64 or SASL PLAIN response.")
            return
        if authzid and authzid.lower() != user.lower():
            password = "\0" + password  # no proxy authorisation
        creds = PasswordCredentials(user, password, self._client_ip, "managesieve")
        self._busy = True
        d: Deferred[Any] = self.factory.checker.requestAvatarId(creds)
        d.addCallbacks(self._authenticated, self._auth_failed, callbackArgs=(user,))
        d.addBoth(self._auth_done)

    def _authenticated(self, avatar: object, user: str) -> None:
        name = avatar.decode("utf-8") if isinstance(avatar, bytes) else str(avatar or user)
        home = self.factory.home_for(name)
        if home is None:
            self._no("User has no mail location.", "TRYLATER")
            return
        self._user = name
        self._store = ScriptStore(home)
        self._state = _AUTH
        maillog("managesieved", f"login: user=<{name}>, rip={self._client_ip}, tls={self._tls}")
        self._ok("Logged in.")

    def _auth_failed(self, failure: Failure) -> None:
        if failure.check(AuthTemporaryError, TooManyLoginAttempts):
            self._no("Temporary authentication failure.", "TRYLATER")
            return
        if not failure.check(UnauthorizedLogin):
            _log.failure("managesieve login failed", failure)
        self._auth_failures += 1
        maillog("managesieved", f"warning: authentication failed: rip={self._client_ip}")
        if self._auth_failures >= MAX_AUTH_FAILURES:
            self._bye("Too many authentication failures.")
        else:
            self._no("Authentication failed.")

    def _auth_done(self, _: object) -> None:
        self._busy = False
        if self._state != _CLOSED:
            self._process()

    # -- commands after login -----------------------------------------------------

    def do_unauthenticate(self, args: list[bytes]) -> None:
        self._state = _NOT_AUTH
        self._store = None
        self._user = ""
        self._ok("Unauthenticated.")

    def _name(self, raw: bytes) -> str:
        return raw.decode("utf-8")

    def do_havespace(self, args: list[bytes]) -> None:
        name, size = self._name(args[0]), int(args[1])
        if size > self.factory.max_script_size:
            self._no("Script is too large.", "QUOTA/MAXSIZE")
        else:
            self._ok("Putscript would succeed.")
        del name

    def do_listscripts(self, args: list[bytes]) -> None:
        store = self._store
        assert store is not None

        def listed(result: tuple[list[str], str | None]) -> None:
            names, active = result
            for name in names:
                self._send(quoted(name) + (b" ACTIVE" if name == active else b"") + b"\r\n")
            self._ok("Listscripts completed.")

        self._later(lambda: (store.names(), store.active()), listed, "LISTSCRIPTS")

    def do_getscript(self, args: list[bytes]) -> None:
        store, name = self._store, self._name(args[0])
        assert store is not None

        def got(content: bytes) -> None:
            self._send(b"{%d}\r\n" % len(content) + content + b"\r\n")
            self._ok("Getscript completed.")

        self._later(lambda: store.get(name), got, "GETSCRIPT")

    def _check(self, content: bytes) -> str | None:
        compiled = compile_text(content, self.factory.max_script_size)
        return compiled.error

    def do_checkscript(self, args: list[bytes]) -> None:
        content = args[0]

        def checked(error: str | None) -> None:
            if error is None:
                self._ok("Script is valid.")
            else:
                self._no(error)

        self._later(lambda: self._check(content), checked, "CHECKSCRIPT")

    def do_putscript(self, args: list[bytes]) -> None:
        store, name, content = self._store, self._name(args[0]), args[1]
        assert store is not None

        def work() -> str | None:
            error = self._check(content)
            if error is None:
                store.put(name, content)
            return error

        def done(error: str | None) -> None:
            if error is not None:
                self._no(error)
                return
            maillog("managesieved", f"{self._user}: stored script {name!r} ({len(content)} bytes)")
            self._ok("Putscript completed.")

        self._later(work, done, "PUTSCRIPT")

    def do_setactive(self, args: list[bytes]) -> None:
        store, name = self._store, self._name(args[0])
        assert store is not None

        def done(_: object) -> None:
            maillog(
                "managesieved",
                f"{self._user}: active script {name!r}"
                if name
                else f"{self._user}: no active script",
            )
            self._ok("Setactive completed.")

        self._later(lambda: store.set_active(name), done, "SETACTIVE")

    def do_deletescript(self, args: list[bytes]) -> None:
        store, name = self._store, self._name(args[0])
        assert store is not None
        self._later(
            lambda: store.delete(name),
            lambda _: self._ok("Deletescript completed."),
            "DELETESCRIPT",
        )

    def do_renamescript(self, args: list[bytes]) -> None:
        store, old, new = self._store, self._name(args[0]), self._name(args[1])
        assert store is not None
        self._later(
            lambda: store.rename(old, new),
            lambda _: self._ok("Renamescript completed."),
            "RENAMESCRIPT",
        )
