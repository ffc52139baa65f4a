"""The ``sendmail`` command (``pymta-sendmail``, ``pymta sendmail``).

Mirrors Postfix's sendmail(1): reads a message on standard input and
queues it for delivery by writing it into the maildrop directory (see
:mod:`pymta.sendmail.postdrop`), where the server's pickup service finds
it. It never talks to the server, so it works, and never waits, when the
server is down: the file waits and goes out at the next start. Exit
status (sysexits): 0 once the file is durable; 64 bad usage or no
recipients; 65 message too big; 69 unsupported mode; 75 a temporary
failure (maildrop full, disk error); 77 not in authorized_submit_users;
78 bad configuration.

Invoked as ``mailq`` it lists the queue, as ``newaliases`` it rebuilds the
aliases (argv[0] decides, as for Postfix's sendmail). ``-bp``, ``-bi``
and ``-q`` run the same commands as ``pymta mailq``, ``pymta newaliases``
and ``pymta flush``. ``-bs`` speaks SMTP on standard input and output
(:mod:`pymta.sendmail.smtp`). The configuration directory is ``-C DIR``
(or a file in it), else $MAIL_CONFIG, else pymta's default search.

Start-up time matters (one process per message): this module imports
only what every run needs; the configuration reader, the header parser and
the queue commands are imported when used. Untrusted input: the command
line and the message. Writes: the maildrop file. Logs: messages on stderr
as ``sendmail: fatal: ...`` (``-L`` changes the name).
"""

from __future__ import annotations

import os
import sys

# Not typing.TYPE_CHECKING (importing typing costs start-up time); mypy
# treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


def full_environment() -> None:
    """Load the site module when Python started without it (the launcher of
    ``pymta install-sendmail`` runs ``python -S``): the modes that import
    installed packages (Twisted, for the queue commands) need site-packages
    on sys.path; a plain submission does not."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()


class _Fatal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _config_directory(explicit: str | None, default: str | None) -> str:
    if explicit:
        # Postfix: -C names main.cf or its directory.
        return os.path.dirname(explicit) if os.path.isfile(explicit) else explicit
    if default:
        return default
    from pymta.config.locate import config_directory

    return config_directory()


def _split_addresses(words: list[str]) -> list[str]:
    """Command-line recipients; one word may hold a list (``a@x, b@y``)."""
    out: list[str] = []
    for word in words:
        if "," in word or "<" in word or "(" in word:
            from email.utils import getaddresses

            out.extend(address for _, address in getaddresses([word]) if address)
        elif word.strip():
            out.append(word.strip())
    return out


def _read_full(config_directory: str) -> dict[str, str]:
    """sendmail's parameters through the full main.cf reader; _Fatal when bad."""
    full_environment()
    from pymta.config.config import Config
    from pymta.config.errors import ConfigError
    from pymta.sendmail.params import DEFAULTS

    try:
        config = Config.load(config_directory)
        values = {name: config.get(name) for name in DEFAULTS}
        values["message_size_limit"] = str(config.get_int("message_size_limit"))
    except ConfigError as e:
        raise _Fatal(EX_CONFIG, str(e)) from None
    return values


def submit(
    opts: object, config_directory: str, stdin: BinaryIO, uid: int, say: object = None
) -> str:
    """Read, check and drop one message; the maildrop path, or _Fatal."""
    from pymta.sendmail.authorized import (
        AuthorizationUnavailable,
        is_authorized,
        login_name,
        split_entries,
    )
    from pymta.sendmail.message import MessageTooBig, extract_recipients, read_message
    from pymta.sendmail.options import Options
    from pymta.sendmail.params import read_fast, resolve_queue_directory
    from pymta.sendmail.postdrop import MaildropFull, write_file
    from pymta.sendmail.record import MaildropMessage, encode

    assert isinstance(opts, Options)
    values = read_fast(config_directory)
    if values is None:
        values = _read_full(config_directory)
    entries = split_entries(values["authorized_submit_users"])
    limit = int(values["message_size_limit"])
    queue_directory = values["queue_directory"]
    queue_directory = resolve_queue_directory(queue_directory, config_directory)
    name = login_name(uid)
    try:
        allowed = is_authorized(name, entries)
    except AuthorizationUnavailable as e:
        raise _Fatal(EX_TEMPFAIL, f"authorized_submit_users: {e}") from None
    if not allowed:
        raise _Fatal(EX_NOPERM, f"User {name}({uid}) is not allowed to submit mail")
    try:
        content = read_message(stdin, opts.ignore_dots, limit)
    except MessageTooBig:
        raise _Fatal(EX_DATAERR, f"message file too big (message_size_limit = {limit})") from None
    recipients = _split_addresses(opts.recipients)
    if opts.extract:
        extracted, content = extract_recipients(content)
        recipients += [r for r in extracted if r not in recipients]
        if not recipients:
            raise _Fatal(EX_USAGE, "No recipient addresses found in message header")
    elif not recipients:
        raise _Fatal(
            EX_USAGE,
            "Recipient addresses must be specified on the command line or via the -t option",
        )
    attributes = {}
    for key, value in (("envid", opts.envid), ("ret", opts.ret), ("body", opts.body)):
        if value:
            attributes[key] = value
    import time

    message = MaildropMessage(
        recipients=[(r, opts.notify) for r in recipients],
        content=content,
        sender=opts.sender,
        full_name=opts.full_name,
        attributes=attributes,
        time=time.time(),
    )
    try:
        return write_file(queue_directory, encode(message))
    except MaildropFull:
        raise _Fatal(
            EX_TEMPFAIL, "maildrop is full (pymta_maildrop_count_limit): try again later"
        ) from None
    except OSError as e:
        raise _Fatal(EX_TEMPFAIL, f"cannot write a maildrop file: {e}") from None


def _run_admin(command: str, config_directory: str) -> int:
    if command == "mailq":
        from pymta.cli.queue import run_mailq

        return run_mailq([], config_directory)
    if command == "flush":
        from pymta.cli.queue import run_flush

        return run_flush([], config_directory)
    from pymta.cli.postmap import run_newaliases

    return run_newaliases([], config_directory)


def run_as(prog: str, args: list[str], default_config: str | None = None) -> int:
    """sendmail invoked as prog (``sendmail``, ``mailq``, ``newaliases``) with args."""
    from pymta.sendmail.options import UsageError, parse

    label = "sendmail"
    try:
        opts = parse(args)
        label = opts.label or label
        if prog in ("mailq", "newaliases") and opts.mode == "deliver":
            opts.mode = prog
        config_directory = _config_directory(opts.config, default_config)
        if opts.mode in ("mailq", "newaliases", "flush"):
            full_environment()
            return _run_admin(opts.mode, config_directory)
        if opts.mode == "verify":
            raise _Fatal(
                EX_UNAVAILABLE,
                "-bv (address verification by mail) is not implemented in pymta; "
                "use 'pymta postmap -q' or send a test message",
            )
        if opts.mode == "smtp":
            full_environment()
            from pymta.sendmail.smtp import serve_stdio

            return serve_stdio(opts, config_directory)
        path = submit(opts, config_directory, sys.stdin.buffer, os.getuid())
        if opts.verbose:
            print(f"{label}: queued as {path}", file=sys.stderr)
        return 0
    except UsageError as e:
        print(f"{label}: fatal: {e}", file=sys.stderr)
        print(
            f"usage: {prog} [-t] [-i] [-f sender] [-F name] [-N dsn] [-R ret] [-V envid] "
            "[-C config] [-bm|-bs|-bp|-bi] [-q] [--] [recipient ...]",
            file=sys.stderr,
        )
        return EX_USAGE
    except _Fatal as e:
        print(f"{label}: fatal: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return EX_TEMPFAIL


def run(args: list[str], config_directory: str) -> int:
    """``pymta [-c DIR] sendmail ARGS`` (the pymta command's signature)."""
    return run_as("sendmail", args, config_directory)


def main(argv: list[str] | None = None) -> int:
    """The ``pymta-sendmail`` console script; argv[0]'s name picks the mode."""
    argv = sys.argv if argv is None else argv
    prog = os.path.basename(argv[0]) if argv else "sendmail"
    if prog not in ("mailq", "newaliases"):
        prog = "sendmail"
    return run_as(prog, list(argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
