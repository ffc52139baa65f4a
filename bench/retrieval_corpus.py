"""retrieval_corpus - the mail both POP3/IMAP benchmarked servers serve.

SYNOPSIS
    from retrieval_corpus import Corpus, Message, BenchUser, make_users

    corpus = Corpus.generate(count=200, size=4096, seed=1)
    corpus.write_maildir(pristine)              # once
    copy_maildir(pristine, home, uid, gid)      # once per user and server

DESCRIPTION
    Corpus.generate builds count deterministic text/plain messages of
    about size bytes each (LF line endings, as Postfix's virtual agent
    writes them), with the headers a delivered message has (Return-Path,
    Received, From, To, Subject, Date, Message-ID, MIME).  Some body
    lines start with "." and one is a lone "." so that both servers'
    dot-stuffing is exercised and verified.  The same seed gives the same
    bytes, so a run on another day serves the same mail.

    write_maildir puts the messages into new/ of a Maildir (what an MDA
    leaves behind), under names like Postfix's virtual agent makes
    (no ",S=" size hint: neither server gets a shortcut), and
    copy_maildir copies such a Maildir for one user of one server, owned
    by the mailbox uid/gid - every user of every server starts with
    identical mail.

    make_users names the users of a run: one per client and repetition,
    rREP cCLIENT @bench.test (repetition 0 is the unmeasured warm-up), each
    with the same password scheme on both servers ({PLAIN}: neither
    server's hashing is what is measured).  passwd_text renders them as a
    Dovecot passwd-file, which both Dovecot and pymta (pymta_passdb) read;
    the home field is the Maildir (mail_location = maildir:~ for Dovecot;
    pymta takes the home field as the Maildir).

TRUST
    Writes only below the directories it is given.  Not part of pymta.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "bench.test"
SENDER = f"sender@{DOMAIN}"
#: 2023-11-14 22:13:20 UTC: a fixed base so that every run has the same dates.
BASE_TIME = 1_700_000_000

_WORDS = (
    "mail queue server client message header body folder index delivery "
    "transport relay domain address mailbox session protocol reply status "
    "retry backoff cleanup resolver bounce notice report daemon process "
    "network socket buffer record commit durable restart recover scan "
    "the a of to and in for on with by from at as is be are was it this"
).split()

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def rfc5322_date(timestamp: int) -> str:
    """An RFC 5322 date in UTC, independent of the locale and time zone."""
    import time

    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


@dataclass(frozen=True)
class Message:
    """One message as it is stored: its Maildir file name and its bytes."""

    name: str
    content: bytes  # LF line endings
    message_id: str
    subject: str

    def lines(self) -> list[bytes]:
        """The lines without terminators, as a POP3 client returns them."""
        return self.content.split(b"\n")[:-1]

    def top(self, body_lines: int) -> list[bytes]:
        """What TOP n body_lines returns (RFC 1939): headers, blank line, n lines."""
        lines = self.lines()
        blank = lines.index(b"")
        return lines[: blank + 1 + body_lines]

    def crlf(self) -> bytes:
        """The content as IMAP serves it (CRLF line endings)."""
        return self.content.replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Corpus:
    """count messages of about size bytes; the same seed gives the same bytes."""

    messages: tuple[Message, ...]

    @classmethod
    def generate(cls, count: int, size: int, seed: int = 1, prefix: str = "m") -> Corpus:
        """Build the messages (see the module docstring)."""
        rng = random.Random(seed)
        return cls(tuple(make_message(rng, i, size, seed, prefix) for i in range(count)))

    def by_message_id(self) -> dict[str, Message]:
        """Message-ID (without brackets) -> message."""
        return {m.message_id: m for m in self.messages}

    def total_bytes(self) -> int:
        """Bytes of all messages as stored."""
        return sum(len(m.content) for m in self.messages)

    def write_maildir(self, path: Path) -> None:
        """Create a Maildir at path holding every message in new/."""
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.messages):
            target = path / "new" / m.name
            target.write_bytes(m.content)
            # Delivery times one minute apart, as the Date headers say.
            os.utime(target, (BASE_TIME + 60 * i, BASE_TIME + 60 * i))


def make_message(rng: random.Random, index: int, size: int, seed: int, prefix: str) -> Message:
    """One message of about size bytes (headers included)."""
    stamp = BASE_TIME + 60 * index
    message_id = f"{prefix}{index}.{seed}@{DOMAIN}"
    subject = f"bench {prefix}{index} " + " ".join(rng.choice(_WORDS) for _ in range(4))
    headers = [
        f"Return-Path: <{SENDER}>",
        f"Received: from client.{DOMAIN} (client.{DOMAIN} [127.0.0.1])",
        f"\tby mx.{DOMAIN} (Postfix) with ESMTP id {index:012X}",
        f"\tfor <user@{DOMAIN}>; {rfc5322_date(stamp)}",
        f"From: Sender {index % 17} <{SENDER}>",
        f"To: <user@{DOMAIN}>",
        f"Subject: {subject}",
        f"Date: {rfc5322_date(stamp)}",
        f"Message-ID: <{message_id}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    text = "\n".join(headers) + "\n\n"
    body: list[str] = []
    used = len(text)
    n = 0
    while used < size:
        n += 1
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < rng.randint(40, 72):
            words.append(rng.choice(_WORDS))
        line = " ".join(words)
        if n % 13 == 0:
            line = "." + line  # dot-stuffed on the wire (RFC 1939 section 3)
        if n == 7:
            line = "."  # a lone dot inside the body must not end the message
        body.append(line)
        used += len(line) + 1
    text += "\n".join(body) + "\n"
    name = f"{stamp}.V801I{index + 1:x}M{(index * 7919) % 1_000_000:06d}.mx.{DOMAIN}"
    return Message(name=name, content=text.encode("ascii"), message_id=message_id, subject=subject)


def copy_maildir(source: Path, target: Path, uid: int, gid: int) -> None:
    """Copy a Maildir (dates kept) and give it to uid:gid."""
    shutil.copytree(source, target)
    for root, _dirs, files in os.walk(target):
        os.chown(root, uid, gid)
        for name in files:
            os.chown(os.path.join(root, name), uid, gid)


def count_messages(maildir: Path) -> int:
    """Messages in a Maildir's cur/ and new/."""
    total = 0
    for sub in ("cur", "new"):
        try:
            with os.scandir(maildir / sub) as it:
                total += sum(1 for e in it if e.is_file() and not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return total


@dataclass(frozen=True)
class BenchUser:
    """One login: its address, password and Maildir (relative to a mail root)."""

    name: str
    password: str
    rep: int
    client: int

    @property
    def maildir(self) -> str:
        """The Maildir below a server's mail root."""
        local = self.name.split("@", 1)[0]
        return f"{DOMAIN}/{local}"


def make_users(clients: int, repeats: int) -> list[BenchUser]:
    """Users rREPcCLIENT@bench.test for rep 0 (warm-up) .. repeats."""
    users = []
    for rep in range(repeats + 1):
        for client in range(clients):
            local = f"r{rep}c{client:02d}"
            users.append(BenchUser(f"{local}@{DOMAIN}", f"pw-{local}", rep, client))
    return users


def passwd_text(users: list[BenchUser], mail_root: Path, uid: int, gid: int) -> str:
    """A Dovecot passwd-file: user:{PLAIN}password:uid:gid::home:: (home = Maildir)."""
    return "".join(
        f"{u.name}:{{PLAIN}}{u.password}:{uid}:{gid}::{mail_root / u.maildir}::\n" for u in users
    )
