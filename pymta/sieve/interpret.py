"""interpret: run a checked Sieve script against one message for one recipient.

Mirrors Pigeonhole's interpreter (RFC 5228 sections 2.10 and 4-5, and the
extensions :mod:`pymta.sieve.check` lists). The result is a list of
actions (keep, fileinto, redirect, reject, ereject, discard, vacation) and
whether the implicit keep still applies; nothing is written here:
:mod:`pymta.sieve.execute` carries the actions out.

Semantics kept from the RFCs: a test matches when any value matches any
key; ``:matches`` sets the match variables ``${0}``..``${9}`` (RFC 5229
section 3.2); ``:count`` counts the values and compares with
i;ascii-numeric (RFC 5231); header values are unfolded and RFC 2047
decoded; ``envelope "from"`` of the null sender is ``""``; reject and
ereject cannot be combined with keep, fileinto, redirect or vacation
(RFC 5429 section 2.1); the same folder is filed into once; imap4flags'
internal variable gives keep and fileinto their flags.

Bounds (untrusted scripts, untrusted messages): at most
``max_actions`` actions and ``max_redirects`` redirects, one vacation,
includes nested :data:`MAX_INCLUDE_DEPTH` deep and :data:`MAX_INCLUDES` in
all, variables of at most :data:`MAX_VARIABLE_SIZE` characters, at most
:data:`MAX_VARIABLES` of them, ``:matches`` with more than
:data:`MAX_CAPTURING_WILDCARDS` wildcards tested without captures
(linear time). Exceeding one is :class:`SieveRuntimeError`, which the
caller answers with an implicit keep into INBOX. Evaluation is CPU work
that may read the whole body: callers run it off the reactor thread.
"""

from __future__ import annotations

import calendar
import datetime
import email
import email.policy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_tz

from pymta.sieve.grammar import Command, Test

MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 255
MAX_VARIABLE_SIZE = 4096
MAX_VARIABLES = 255
MAX_CAPTURING_WILDCARDS = 8
#: RFC 7352: the default and longest duplicate tracking periods (Pigeonhole's).
DUPLICATE_DEFAULT_PERIOD = 12 * 3600
DUPLICATE_MAX_PERIOD = 2 * 86400
#: RFC 5230 section 4.1: :days default 7, at least 1 (Pigeonhole: at most 60).
VACATION_DEFAULT_DAYS = 7
VACATION_MAX_DAYS = 60


class SieveRuntimeError(Exception):
    """The script cannot complete (a limit, conflicting actions...)."""


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


@dataclass
class Action:
    kind: str  # keep, fileinto, redirect, reject, ereject, discard, vacation
    folder: str = "INBOX"
    flags: tuple[str, ...] = ()
    create: bool = False
    address: str = ""
    reason: str = ""
    #: vacation: the reply's parameters (subject, from, mime, tracking key, period)
    vacation: dict[str, object] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a run decided."""

    actions: list[Action]
    implicit_keep: bool
    keep_flags: tuple[str, ...]
    #: (tracking key, seconds) for duplicate tests to record once delivered.
    duplicate_marks: list[tuple[str, int]]


@dataclass
class Message:
    """The message and envelope a script sees (LF line ends)."""

    header: bytes
    body: Callable[[], bytes]  # the content after the header section
    size: int
    envelope_from: str
    envelope_to: str
    #: The user's own addresses (vacation: replies only to mail sent to them).
    user_addresses: tuple[str, ...]
    now: float
    #: Seconds east of UTC of the server's zone at ``now`` (date tests).
    local_offset: int = 0
    mailbox_exists: Callable[[str], bool] = lambda name: name.upper() == "INBOX"
    #: Whether a tracking key (duplicate, vacation) was seen and is unexpired.
    seen: Callable[[str], bool] = lambda key: False
    #: Loads an included script: (location, name) -> commands, or None when absent.
    include: Callable[[str, str], list[Command] | None] = lambda location, name: None
    delimiter: str = "+"


# -- the message's header fields -------------------------------------------------


def parse_header(header: bytes) -> list[tuple[str, str]]:
    """(lower-cased name, unfolded raw value) for each header field."""
    fields: list[tuple[str, str]] = []
    for raw in header.split(b"\n"):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t") and fields:
            last_name, last_value = fields[-1]
            fields[-1] = (last_name, last_value + " " + raw.strip().decode("utf-8", "replace"))
            continue
        name, sep, value = raw.partition(b":")
        if not sep:
            continue
        fields.append(
            (
                name.strip().decode("ascii", "replace").lower(),
                value.strip().decode("utf-8", "replace"),
            )
        )
    return fields


def decode_value(value: str) -> str:
    """An RFC 2047 encoded value decoded (as it is when it does not decode)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


# -- comparators and match types ---------------------------------------------------


def _fold(comparator: str, text: str) -> str:
    if comparator == "i;ascii-casemap":
        return text.translate(_ASCII_LOWER)
    return text


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _numeric(text: str) -> float:
    """i;ascii-numeric (RFC 4790 section 9.1): the leading digits; none is infinity."""
    m = re.match(r"[0-9]+", text)
    return float(int(m.group())) if m else float("inf")


def _relate(relation: str, a: object, b: object) -> bool:
    return {
        "gt": a > b,  # type: ignore[operator]
        "ge": a >= b,  # type: ignore[operator]
        "lt": a < b,  # type: ignore[operator]
        "le": a <= b,  # type: ignore[operator]
        "eq": a == b,
        "ne": a != b,
    }[relation]


def _glob_regex(pattern: str) -> tuple[re.Pattern[str], int]:
    """A :matches pattern as a regular expression with a group per wildcard."""
    out: list[str] = []
    groups = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("(.*?)")
            groups += 1
        elif c == "?":
            out.append("(.)")
            groups += 1
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL), groups


def glob_match(pattern: str, text: str) -> bool:
    """:matches without captures, in O(len(pattern) * len(text)) at worst."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append("\\" + pattern[i + 1])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    p = t = 0
    star_p, star_t = -1, 0
    while t < len(text):
        if p < len(tokens) and (
            tokens[p] == "?" or (tokens[p][-1] == text[t] and tokens[p] != "*")
        ):
            p += 1
            t += 1
        elif p < len(tokens) and tokens[p] == "*":
            star_p, star_t = p, t
            p += 1
        elif star_p >= 0:
            p = star_p + 1
            star_t += 1
            t = star_t
        else:
            return False
    while p < len(tokens) and tokens[p] == "*":
        p += 1
    return p == len(tokens)


# -- the interpreter ---------------------------------------------------------------


class Interpreter:
    """One run of one script (and its includes) for one message."""

    def __init__(
        self,
        message: Message,
        required: set[str],
        max_actions: int = 32,
        max_redirects: int = 4,
    ) -> None:
        self.msg = message
        self.required = required
        self.max_actions = max_actions
        self.max_redirects = max_redirects
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: list[str] = []  # imap4flags' internal variable
        self.variables: dict[str, str] = {}
        self.globals: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.match_values: list[str] = []
        self.duplicate_marks: list[tuple[str, int]] = []
        self._headers: list[tuple[str, str]] | None = None
        self._body: bytes | None = None
        self._includes = 0
        self._included_once: set[tuple[str, str]] = set()
        self._vacation_done = False

    # -- running -------------------------------------------------------------------

    def run(self, commands: list[Command]) -> Outcome:
        try:
            self._block(commands, 0)
        except (_Stop, _Return):
            pass
        return Outcome(self.actions, self.implicit_keep, tuple(self.flags), self.duplicate_marks)

    def _block(self, commands: list[Command], depth: int) -> None:
        branch_taken = False
        for command in commands:
            name = command.name
            if name == "if":
                branch_taken = self._test(command.tests[0])
                if branch_taken:
                    self._block(command.block or [], depth)
            elif name == "elsif":
                if not branch_taken:
                    branch_taken = self._test(command.tests[0])
                    if branch_taken:
                        self._block(command.block or [], depth)
            elif name == "else":
                if not branch_taken:
                    self._block(command.block or [], depth)
                branch_taken = True
            else:
                self._action(command, depth)

    def _expand(self, text: str) -> str:
        if "variables" not in self.required or "${" not in text:
            return text
        return _VARIABLE_REF.sub(self._lookup_variable, text)

    def _lookup_variable(self, m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name.isdigit():
            index = int(name)
            return self.match_values[index] if index < len(self.match_values) else ""
        if name in self.global_names:
            return self.globals.get(name, "")
        return self.variables.get(name, "")

    def _set_variable(self, name: str, value: str) -> None:
        value = value[:MAX_VARIABLE_SIZE]
        target = self.globals if name in self.global_names else self.variables
        if name not in target and len(self.variables) + len(self.globals) >= MAX_VARIABLES:
            raise SieveRuntimeError("too many variables")
        target[name] = value

    def _get_variable(self, name: str) -> str:
        name = name.lower()
        if name in self.global_names:
            return self.globals.get(name, "")
        return self.variables.get(name, "")

    def _strings(self, values: object) -> list[str]:
        return [self._expand(v) for v in values]  # type: ignore[attr-defined]

    def _add(self, action: Action) -> None:
        if len(self.actions) >= self.max_actions:
            raise SieveRuntimeError(f"more than {self.max_actions} actions")
        kinds = {a.kind for a in self.actions}
        rejecting = action.kind in ("reject", "ereject")
        if (
            rejecting and kinds & {"keep", "fileinto", "redirect", "vacation", "reject", "ereject"}
        ) or (not rejecting and action.kind != "discard" and kinds & {"reject", "ereject"}):
            raise SieveRuntimeError(f"{action.kind} cannot be combined with the other actions")
        if action.kind in ("keep", "fileinto"):
            if action.folder.upper() == "INBOX":
                action.folder = "INBOX"
            for a in self.actions:
                if a.kind in ("keep", "fileinto") and a.folder == action.folder:
                    a.flags = action.flags  # RFC 5228 2.10.3: once; the last flags win
                    return
        if action.kind == "redirect":
            redirects = [a for a in self.actions if a.kind == "redirect"]
            if any(a.address.lower() == action.address.lower() for a in redirects):
                return
            if len(redirects) >= self.max_redirects:
                raise SieveRuntimeError(f"more than {self.max_redirects} redirects")
        self.actions.append(action)

    def _current_flags(self, given: object) -> tuple[str, ...]:
        if given is None:
            return tuple(self.flags)
        return tuple(_flag_list(self._strings(given)))

    def _action(self, command: Command, depth: int) -> None:
        name, c = command.name, command.checked
        if name == "require":
            return
        if name == "stop":
            raise _Stop()
        if name == "return":
            raise _Return()
        if name == "keep":
            self._add(Action("keep", "INBOX", self._current_flags(c.get("flags"))))
            self.implicit_keep = False
        elif name == "discard":
            self.implicit_keep = False
        elif name == "fileinto":
            folder = self._expand(str(c["folder"]))
            action = Action(
                "fileinto", folder, self._current_flags(c.get("flags")), bool(c.get("create"))
            )
            self._add(action)
            if not c.get("copy"):
                self.implicit_keep = False
        elif name == "redirect":
            address = self._expand(str(c["address"])).strip()
            if not re.fullmatch(r"[^\s<>@]+@[^\s<>@]+", address):
                raise SieveRuntimeError(f"redirect: invalid address {address!r}")
            self._add(Action("redirect", address=address))
            if not c.get("copy"):
                self.implicit_keep = False
        elif name in ("reject", "ereject"):
            self._add(Action(name, reason=self._expand(str(c["reason"]))))
            self.implicit_keep = False
        elif name in ("setflag", "addflag", "removeflag"):
            flags = _flag_list(self._strings(c["flags"]))
            variable = c.get("variable")
            current = (
                _flag_list([self._get_variable(str(variable))])
                if variable is not None
                else list(self.flags)
            )
            if name == "setflag":
                new = flags
            elif name == "addflag":
                new = current + [f for f in flags if f.lower() not in {x.lower() for x in current}]
            else:
                drop = {f.lower() for f in flags}
                new = [f for f in current if f.lower() not in drop]
            if variable is not None:
                self._set_variable(str(variable).lower(), " ".join(new))
            else:
                self.flags = new
        elif name == "set":
            value = self._expand(str(c["value"]))
            for modifier in c["modifiers"]:  # type: ignore[attr-defined]
                value = _modify(str(modifier), value)
            self._set_variable(str(c["name"]), value)
        elif name == "global":
            for var in c["names"]:  # type: ignore[attr-defined]
                self.global_names.add(str(var))
        elif name == "include":
            self._include(c, depth)
        elif name == "vacation":
            self._vacation(c)
        else:  # the checker let nothing else through
            raise SieveRuntimeError(f"unknown command {name}")

    def _include(self, c: dict[str, object], depth: int) -> None:
        location, script = str(c["location"]), self._expand(str(c["name"]))
        key = (location, script)
        if c.get("once") and key in self._included_once:
            return
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise SieveRuntimeError("includes nested too deeply")
        self._includes += 1
        if self._includes > MAX_INCLUDES:
            raise SieveRuntimeError("too many includes")
        commands = self.msg.include(location, script)
        if commands is None:
            if c.get("optional"):
                return
            raise SieveRuntimeError(f"include: script {script!r} ({location}) not found")
        self._included_once.add(key)
        saved = self.variables
        self.variables = {}  # RFC 6609 section 3.3: local variables are the script's own
        try:
            self._block(commands, depth + 1)
        except _Return:
            pass
        finally:
            self.variables = saved

    # -- vacation (RFC 5230) ---------------------------------------------------------

    def _vacation(self, c: dict[str, object]) -> None:
        if self._vacation_done:
            raise SieveRuntimeError("vacation: only one vacation action per script")
        self._vacation_done = True
        if any(a.kind in ("reject", "ereject") for a in self.actions):
            raise SieveRuntimeError("vacation cannot be combined with reject")
        reason = self._expand(str(c["reason"]))
        subject = self._expand(str(c["subject"])) if "subject" in c else None
        sender_from = self._expand(str(c["from"])) if "from" in c else None
        addresses = [a.lower() for a in self._strings(c.get("addresses", []))]
        days = int(c.get("days", VACATION_DEFAULT_DAYS))  # type: ignore[call-overload]
        days = min(max(days, 1), VACATION_MAX_DAYS)
        handle = c.get("handle")
        if handle is None:
            # RFC 5230 section 4.2: the default handle comes from the arguments.
            handle = hashlib.sha256(f"{reason}\0{subject}\0{sender_from}".encode()).hexdigest()
        recipient = self.msg.envelope_from
        if not self._vacation_wanted(recipient, addresses):
            return
        key = "vacation:" + hashlib.sha256(f"{recipient.lower()}\0{handle}".encode()).hexdigest()
        if self.msg.seen(key):
            return
        self._add(
            Action(
                "vacation",
                address=recipient,
                reason=reason,
                vacation={
                    "subject": subject,
                    "from": sender_from,
                    "mime": bool(c.get("mime")),
                    "key": key,
                    "seconds": days * 86400,
                    "original_subject": self._header_values("subject", decode=True)[:1],
                    "message_id": self._header_values("message-id")[:1],
                    "references": self._header_values("references")[:1],
                },
            )
        )

    def _vacation_wanted(self, sender: str, extra: list[str]) -> bool:
        """RFC 5230 section 4.5 and RFC 3834: whom a vacation never answers."""
        if not sender or "@" not in sender:
            return False
        local = sender.split("@", 1)[0].lower()
        if (
            local in ("mailer-daemon", "listserv", "majordomo", "postmaster")
            or local.startswith("owner-")
            or local.endswith("-request")
        ):
            return False
        mine = {self._base_address(a) for a in (*self.msg.user_addresses, *extra)}
        if self._base_address(sender) in mine:
            return False
        for value in self._header_values("auto-submitted"):
            if value.strip().lower().split(";")[0].strip() != "no":
                return False
        for name in ("list-id", "list-post", "list-unsubscribe", "list-help", "list-owner"):
            if self._header_values(name):
                return False
        for value in self._header_values("precedence"):
            if value.strip().lower() in ("bulk", "list", "junk"):
                return False
        if self._header_values("x-spam-flag") and any(
            v.strip().lower() == "yes" for v in self._header_values("x-spam-flag")
        ):
            return False
        # Only mail addressed to the user (section 4.5).
        recipients = {
            self._base_address(address)
            for _, address in getaddresses(
                [decode_value(v) for n in ("to", "cc", "bcc", "resent-to", "resent-cc")
                 for v in self._header_values(n)]
            )
        }  # fmt: skip
        return bool(recipients & mine)

    def _base_address(self, address: str) -> str:
        """The address lower-cased and without its detail (user+detail@)."""
        local, at, domain = address.lower().rpartition("@")
        if not at:
            return address.lower()
        for i, ch in enumerate(local):
            if i > 0 and self.msg.delimiter and ch in self.msg.delimiter:
                return f"{local[:i]}@{domain}"
        return f"{local}@{domain}"

    # -- tests ---------------------------------------------------------------------

    def _header_values(self, name: str, decode: bool = False) -> list[str]:
        if self._headers is None:
            self._headers = parse_header(self.msg.header)
        name = name.lower()
        values = [v for n, v in self._headers if n == name]
        return [decode_value(v) for v in values] if decode else values

    def _test(self, test: Test) -> bool:
        name, c = test.name, test.checked
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self._test(test.tests[0])
        if name == "allof":
            return all(self._test(t) for t in test.tests)
        if name == "anyof":
            return any(self._test(t) for t in test.tests)
        if name == "exists":
            return all(self._header_values(h) for h in self._strings(c["headers"]))
        if name == "size":
            limit = int(c["limit"])  # type: ignore[call-overload]
            return self.msg.size > limit if c["over"] else self.msg.size < limit
        if name == "header":
            values = [
                v for h in self._strings(c["headers"]) for v in self._header_values(h, decode=True)
            ]
            return self._match(c, values)
        if name == "address":
            values = []
            for h in self._strings(c["headers"]):
                for v in self._header_values(h, decode=True):
                    for _, address in getaddresses([v]):
                        if address:
                            values.append(address)
            return self._match(c, self._parts(values, str(c["part"])))
        if name == "envelope":
            values = []
            for part in self._strings(c["headers"]):
                part = part.lower()
                if part == "from":
                    values.append(self.msg.envelope_from)
                elif part == "to":
                    values.append(self.msg.envelope_to)
            return self._match(c, self._parts(values, str(c["part"]), envelope=True))
        if name == "string":
            return self._match(
                c, [s for s in self._strings(c["sources"]) if s or c["match"] != "count"]
            )
        if name == "body":
            return self._match(
                c, self._body_values(str(c["transform"]), self._strings(c["content_types"]))
            )
        if name in ("date", "currentdate"):
            return self._match(c, self._date_values(name, c))
        if name == "hasflag":
            variables = c.get("variables")
            if variables is None:
                flags = list(self.flags)
            else:
                flags = _flag_list([self._get_variable(v) for v in variables])  # type: ignore[attr-defined]
            return self._match(c, flags)
        if name == "mailboxexists":
            return all(self.msg.mailbox_exists(n) for n in self._strings(c["names"]))
        if name == "duplicate":
            return self._duplicate(c)
        raise SieveRuntimeError(f"unknown test {name}")

    def _parts(self, addresses: list[str], part: str, envelope: bool = False) -> list[str]:
        out = []
        for address in addresses:
            if envelope and address == "":
                if part == "all":
                    out.append("")
                continue
            local, _, domain = address.rpartition("@") if "@" in address else (address, "", "")
            if part == "all":
                out.append(address)
            elif part == "localpart":
                out.append(local)
            elif part == "domain":
                out.append(domain)
            else:
                user, sep, detail = local, "", ""
                for i, ch in enumerate(local):
                    if self.msg.delimiter and ch in self.msg.delimiter:
                        user, sep, detail = local[:i], ch, local[i + 1 :]
                        break
                if part == "user":
                    out.append(user)
                elif sep:  # :detail of an address without one does not match
                    out.append(detail)
        return out

    def _match(self, c: dict[str, object], values: list[str]) -> bool:
        match = str(c["match"])
        comparator = str(c["comparator"])
        relation = c.get("relation")
        keys = self._strings(c["keys"])
        if match == "count":
            count = len(values)
            return any(_relate(str(relation), float(count), _numeric(k)) for k in keys)
        for value in values:
            for key in keys:
                if self._match_one(match, comparator, relation, value, key):
                    return True
        return False

    def _match_one(
        self, match: str, comparator: str, relation: object, value: str, key: str
    ) -> bool:
        if match == "value" or (match == "is" and comparator == "i;ascii-numeric"):
            if comparator == "i;ascii-numeric":
                a: object = _numeric(value)
                b: object = _numeric(key)
            else:
                a, b = _fold(comparator, value), _fold(comparator, key)
            return _relate(str(relation or "eq"), a, b)
        if comparator == "i;ascii-numeric":
            return False  # no substring matching on numbers (RFC 4790 section 9.1)
        v, k = _fold(comparator, value), _fold(comparator, key)
        if match == "is":
            return v == k
        if match == "contains":
            return k in v
        # :matches
        wildcards = k.count("*") + k.count("?")
        if "variables" in self.required and wildcards <= MAX_CAPTURING_WILDCARDS:
            pattern, _ = _glob_regex(k)
            m = pattern.match(v)
            if m is None:
                return False
            # The match variables take the value's own spelling (RFC 5229 3.2).
            spans = [value[m.start(i) : m.end(i)] for i in range(1, (m.lastindex or 0) + 1)]
            self.match_values = [value, *spans][:10]
            return True
        return glob_match(k, v)

    def _body_values(self, transform: str, content_types: list[str]) -> list[str]:
        if self._body is None:
            self._body = self.msg.body()
        if transform == "raw":
            return [self._body.decode("utf-8", "replace")]
        message = email.message_from_bytes(
            self.msg.header + b"\n" + self._body, policy=email.policy.default
        )
        wanted = ["text"] if transform == "text" else [t.lower() for t in content_types]
        out: list[str] = []
        for part in message.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            maintype = ctype.split("/")[0]
            if not any(w == "" or w == ctype or w == maintype for w in wanted):
                continue
            try:
                content = part.get_content()
            except (LookupError, ValueError, AssertionError):
                content = part.get_payload(decode=True) or b""
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            if isinstance(content, str):
                out.append(content)
        return out

    def _date_values(self, name: str, c: dict[str, object]) -> list[str]:
        zone = c.get("zone")
        if name == "currentdate":
            timestamp, original = self.msg.now, None
        else:
            values = self._header_values(str(c["header"]))
            if not values:
                return []
            value = values[0]
            if str(c["header"]).lower() == "received":
                value = value.rpartition(";")[2]
            parsed = parsedate_tz(value.strip())
            if parsed is None:
                return []
            timestamp = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
            original = parsed[9] or 0
        if zone is not None:
            text = str(zone)
            offset = (int(text[1:3]) * 3600 + int(text[3:5]) * 60) * (-1 if text[0] == "-" else 1)
        elif c.get("originalzone") and original is not None:
            offset = original
        else:
            offset = self.msg.local_offset
        when = datetime.datetime.fromtimestamp(
            timestamp, datetime.timezone(datetime.timedelta(seconds=offset))
        )
        return [_date_part(when, offset, str(c["part"]))]

    def _duplicate(self, c: dict[str, object]) -> bool:
        if "uniqueid" in c:
            unique = self._expand(str(c["uniqueid"]))
        else:
            values = self._header_values(str(c.get("header", "message-id")))
            if not values:
                return False  # RFC 7352 section 3.1: no ID, never a duplicate
            unique = values[0].strip()
        handle = self._expand(str(c.get("handle", "")))
        key = "duplicate:" + hashlib.sha256(f"{handle}\0{unique}".encode()).hexdigest()
        seconds = int(c.get("seconds", DUPLICATE_DEFAULT_PERIOD))  # type: ignore[call-overload]
        seconds = min(max(seconds, 0), DUPLICATE_MAX_PERIOD)
        seen = self.msg.seen(key)
        if not seen or c.get("last"):
            self.duplicate_marks.append((key, seconds))
        return seen


_VARIABLE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\}")


def _flag_list(values: list[str]) -> list[str]:
    """Space-separated flags, each once (case-insensitively), in order."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                out.append(flag)
    return out


def _modify(modifier: str, value: str) -> str:
    """RFC 5229 section 4.1's modifiers of ``set``."""
    if modifier == "lower":
        return value.lower()
    if modifier == "upper":
        return value.upper()
    if modifier == "lowerfirst":
        return value[:1].lower() + value[1:]
    if modifier == "upperfirst":
        return value[:1].upper() + value[1:]
    if modifier == "quotewildcard":
        return re.sub(r"([*?\\])", r"\\\1", value)
    if modifier == "quoteregex":
        return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)
    if modifier == "encodeurl":
        from urllib.parse import quote

        return quote(value, safe="-._~")
    if modifier == "length":
        return str(len(value))
    return value


def _date_part(when: datetime.datetime, offset: int, part: str) -> str:
    """RFC 5260 section 4.2's date parts."""
    sign = "+" if offset >= 0 else "-"
    zone = f"{sign}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d}"
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return when.strftime("%Y-%m-%d")
    if part == "julian":
        return str(int((when.replace(tzinfo=None) - datetime.datetime(1858, 11, 17)).days))
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return when.strftime("%H:%M:%S")
    if part == "iso8601":
        return when.strftime("%Y-%m-%dT%H:%M:%S") + zone[:3] + ":" + zone[3:]
    if part == "std11":
        return when.strftime("%a, %d %b %Y %H:%M:%S ") + zone
    if part == "zone":
        return zone
    return str(when.isoweekday() % 7)  # weekday: 0 is Sunday
