"""``sendmail -bs``: SMTP on standard input and output, into the maildrop.

Mirrors Postfix's ``sendmail -bs`` (smtpd in stand-alone mode): a program
that speaks SMTP to a pipe (some MUAs, UUCP-style gateways) gets a 220
greeting and the commands HELO, EHLO, MAIL, RCPT, DATA, RSET, NOOP and
QUIT; each message accepted with DATA becomes one maildrop file written
exactly as ``sendmail`` writes it (durable before the 250), so pickup
records the kernel's uid as for any other local submission. MAIL FROM's
address is the envelope sender, as ``-f`` would be (Postfix allows it too);
the Received header still names the submitting uid. RET/ENVID and
NOTIFY parameters are kept; others are refused with 555. Lines end in
CRLF or LF; DATA is dot-unstuffed (RFC 5321 4.5.2). Untrusted input:
every line. Writes: maildrop files. Logs nothing (replies say it all).
"""

from __future__ import annotations

import os
import re
import sys
from typing import BinaryIO

_PATH = re.compile(r"^\s*<([^<>]*)>((?:\s+\S+)*)\s*$")


def _reply(out: BinaryIO, text: str) -> None:
    out.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
    out.flush()


def _params(words: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for word in words.split():
        key, _, value = word.partition("=")
        found[key.upper()] = value
    return found


def serve(opts: object, config_directory: str, stdin: BinaryIO, stdout: BinaryIO, uid: int) -> int:
    """Run one SMTP session over the two streams; the exit status."""
    from pymta.config.config import Config
    from pymta.sendmail.authorized import is_authorized, login_name, split_entries
    from pymta.sendmail.postdrop import MaildropFull, write_file
    from pymta.sendmail.record import MaildropMessage, encode

    config = Config.load(config_directory)
    hostname = config.get("myhostname")
    limit = config.get_int("message_size_limit")
    from pymta.sendmail.params import resolve_queue_directory

    queue_directory = resolve_queue_directory(config.get("queue_directory"), config_directory)
    name = login_name(uid)
    if not is_authorized(name, split_entries(config.get("authorized_submit_users"))):
        _reply(stdout, f"554 5.7.1 User {name}({uid}) is not allowed to submit mail")
        return 77
    _reply(stdout, f"220 {hostname} ESMTP pymta (sendmail -bs)")
    sender: str | None = None
    attributes: dict[str, str] = {}
    recipients: list[tuple[str, str]] = []
    while True:
        raw = stdin.readline(4096)
        if not raw:
            return 0
        line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if verb in ("HELO", "EHLO"):
            if verb == "EHLO":
                _reply(stdout, f"250-{hostname}")
                _reply(stdout, f"250-SIZE {limit}")
                _reply(stdout, "250-8BITMIME")
                _reply(stdout, "250 DSN")
            else:
                _reply(stdout, f"250 {hostname}")
        elif verb == "MAIL" and arg[:5].upper() == "FROM:":
            m = _PATH.match(arg[5:])
            if sender is not None:
                _reply(stdout, "503 5.5.1 Error: nested MAIL command")
            elif not m:
                _reply(stdout, "501 5.1.7 Bad sender address syntax")
            else:
                params = _params(m.group(2))
                unknown = set(params) - {"RET", "ENVID", "SIZE", "BODY"}
                if unknown:
                    _reply(stdout, f"555 5.5.4 Unsupported option: {sorted(unknown)[0]}")
                    continue
                attributes = {}
                if params.get("RET", "").upper() in ("FULL", "HDRS"):
                    attributes["ret"] = params["RET"].upper()
                if params.get("ENVID"):
                    attributes["envid"] = params["ENVID"][:100]
                sender = m.group(1)
                _reply(stdout, "250 2.1.0 Ok")
        elif verb == "RCPT" and arg[:3].upper() == "TO:":
            m = _PATH.match(arg[3:])
            if sender is None:
                _reply(stdout, "503 5.5.1 Error: need MAIL command")
            elif not m or not m.group(1):
                _reply(stdout, "501 5.1.3 Bad recipient address syntax")
            else:
                notify = _params(m.group(2)).get("NOTIFY", "").upper()
                if notify and notify != "NEVER":
                    words = notify.split(",")
                    notify = ",".join(w for w in ("SUCCESS", "FAILURE", "DELAY") if w in words)
                recipients.append((m.group(1), notify))
                _reply(stdout, "250 2.1.5 Ok")
        elif verb == "DATA":
            if not recipients or sender is None:
                _reply(stdout, "503 5.5.1 Error: need RCPT command")
                continue
            _reply(stdout, "354 End data with <CR><LF>.<CR><LF>")
            lines: list[bytes] = []
            size = 0
            ended = False
            for data_line in iter(lambda: stdin.readline(65536), b""):
                body = data_line.rstrip(b"\r\n")
                if body == b".":
                    ended = True
                    break
                if body.startswith(b"."):
                    body = body[1:]
                size += len(body) + 1
                if not limit or size <= limit:
                    lines.append(body + b"\n")
            if not ended:
                return 0
            if limit and size > limit:
                _reply(stdout, "552 5.3.4 Error: message file too big")
            else:
                message = MaildropMessage(
                    recipients=recipients,
                    content=b"".join(lines),
                    sender=sender,
                    attributes=attributes,
                )
                try:
                    path = write_file(queue_directory, encode(message))
                except MaildropFull:
                    _reply(stdout, "452 4.3.1 Error: maildrop is full, try again later")
                except OSError:
                    _reply(stdout, "451 4.3.0 Error: queue file write error")
                else:
                    _reply(stdout, f"250 2.0.0 Ok: queued as {os.path.basename(path)}")
            sender, recipients, attributes = None, [], {}
        elif verb == "RSET":
            sender, recipients, attributes = None, [], {}
            _reply(stdout, "250 2.0.0 Ok")
        elif verb == "NOOP":
            _reply(stdout, "250 2.0.0 Ok")
        elif verb == "QUIT":
            _reply(stdout, "221 2.0.0 Bye")
            return 0
        else:
            _reply(stdout, "502 5.5.2 Error: command not recognized")


def serve_stdio(opts: object, config_directory: str) -> int:
    """-bs on the process's standard input and output."""
    return serve(opts, config_directory, sys.stdin.buffer, sys.stdout.buffer, os.getuid())
