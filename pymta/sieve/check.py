"""check: what each Sieve command and test means, checked before a run.

Mirrors Pigeonhole's validator: every command and test is known, its tags
and arguments have the kinds RFC 5228 and each extension give them, the
extensions it uses were named by ``require``, ``elsif``/``else`` follow an
``if``, ``require`` comes first. The result is stored on each node
(``checked``) for :mod:`pymta.sieve.interpret`. ``encoded-character``
strings (RFC 5228 section 2.4.2.4) are decoded here.

Extensions: fileinto, reject, ereject (RFC 5429), envelope,
encoded-character, variables (RFC 5229), vacation (RFC 5230), relational
(RFC 5231), subaddress (RFC 5233), copy (RFC 3894), imap4flags (RFC 5232),
body (RFC 5173), date (RFC 5260), include (RFC 6609), mailbox (RFC 5490),
duplicate (RFC 7352), and the comparators i;octet, i;ascii-casemap and
i;ascii-numeric.

Untrusted input: the syntax tree of a user's script. Errors are
:class:`~pymta.sieve.grammar.SieveSyntaxError` with a line number. Pure.
"""

from __future__ import annotations

import re

from pymta.sieve.grammar import (
    Argument,
    Command,
    Number,
    SieveSyntaxError,
    StringList,
    Tag,
    Test,
    parse,
)

EXTENSIONS = frozenset(
    {
        "fileinto",
        "reject",
        "ereject",
        "envelope",
        "encoded-character",
        "variables",
        "vacation",
        "relational",
        "subaddress",
        "copy",
        "imap4flags",
        "body",
        "date",
        "include",
        "mailbox",
        "duplicate",
        "comparator-i;octet",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
    }
)

COMPARATORS = {"i;octet", "i;ascii-casemap", "i;ascii-numeric"}
RELATIONS = {"gt", "ge", "lt", "le", "eq", "ne"}
DATE_PARTS = {
    "year", "month", "day", "date", "julian", "hour", "minute", "second",
    "time", "iso8601", "std11", "zone", "weekday",
}  # fmt: skip
SET_MODIFIERS = {
    "lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30,
    "quotewildcard": 20, "quoteregex": 20, "encodeurl": 15, "length": 10,
}  # fmt: skip
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ENCODED = re.compile(r"\$\{(hex|unicode):([0-9A-Fa-f \t\r\n]*)\}", re.IGNORECASE)


def _decode_encoded(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        kind, digits = m.group(1).lower(), m.group(2).split()
        try:
            if kind == "hex":
                return bytes(int(d, 16) for d in digits).decode("utf-8")
            return "".join(chr(int(d, 16)) for d in digits)
        except (ValueError, OverflowError):
            return m.group(0)  # RFC 5228 2.4.2.4: left as it is

    return _ENCODED.sub(one, text)


class Checker:
    """Checks one script's commands; ``required`` grows with ``require``."""

    def __init__(self) -> None:
        self.required: set[str] = set()

    def check(self, commands: list[Command]) -> list[Command]:
        self._block(commands, top=True)
        return commands

    # -- walking ------------------------------------------------------------------

    def _block(self, commands: list[Command], top: bool = False) -> None:
        previous = ""
        seen_other = False
        for command in commands:
            name = command.name
            if name == "require":
                if not top or seen_other:
                    raise SieveSyntaxError(command.line, "require must come before other commands")
            else:
                seen_other = True
            if name in ("elsif", "else") and previous not in ("if", "elsif"):
                raise SieveSyntaxError(command.line, f"{name} without if")
            self._command(command)
            previous = name

    def _strings(self, arg: Argument | None, what: str, line: int) -> list[str]:
        if not isinstance(arg, StringList):
            raise SieveSyntaxError(line, f"expected {what} (a string or string list)")
        if "encoded-character" in self.required:
            arg.values = [_decode_encoded(v) for v in arg.values]
        return arg.values

    def _string(self, arg: Argument | None, what: str, line: int) -> str:
        if not isinstance(arg, StringList) or not arg.single:
            raise SieveSyntaxError(line, f"expected {what} (one string)")
        return self._strings(arg, what, line)[0]

    def _split(
        self, node: Command | Test, with_value: dict[str, str], flags: set[str]
    ) -> tuple[dict[str, object], list[Argument]]:
        """Tags (with their values) and the positional arguments after them."""
        tags: dict[str, object] = {}
        positional: list[Argument] = []
        args = node.args
        i = 0
        while i < len(args):
            arg = args[i]
            if isinstance(arg, Tag):
                if positional:
                    raise SieveSyntaxError(
                        arg.line, f"{node.name}: tag :{arg.name} after arguments"
                    )
                if arg.name in tags:
                    raise SieveSyntaxError(arg.line, f"{node.name}: tag :{arg.name} given twice")
                if arg.name in flags:
                    tags[arg.name] = True
                elif arg.name in with_value:
                    if i + 1 >= len(args):
                        raise SieveSyntaxError(arg.line, f"{node.name}: :{arg.name} needs a value")
                    value = args[i + 1]
                    kind = with_value[arg.name]
                    if kind == "number":
                        if not isinstance(value, Number):
                            raise SieveSyntaxError(arg.line, f":{arg.name} needs a number")
                        tags[arg.name] = value.value
                    elif kind == "string":
                        tags[arg.name] = self._string(value, f":{arg.name} value", arg.line)
                    else:
                        tags[arg.name] = self._strings(value, f":{arg.name} value", arg.line)
                    i += 1
                else:
                    raise SieveSyntaxError(arg.line, f"{node.name}: unknown tag :{arg.name}")
            else:
                positional.append(arg)
            i += 1
        return tags, positional

    def _need(self, extension: str, line: int, what: str) -> None:
        if extension not in self.required:
            raise SieveSyntaxError(line, f'{what} needs require "{extension}"')

    def _positional(self, node: Command | Test, positional: list[Argument], count: int) -> None:
        if len(positional) != count:
            raise SieveSyntaxError(
                node.line, f"{node.name}: expected {count} argument(s), found {len(positional)}"
            )

    def _no_tests(self, node: Command | Test) -> None:
        if node.tests:
            raise SieveSyntaxError(node.line, f"{node.name}: takes no test")

    # -- matching tags (comparator, match type, address part) ----------------------

    _MATCH_FLAGS = {"is", "contains", "matches"}
    _MATCH_VALUES = {"comparator": "string", "count": "string", "value": "string"}

    def _match(self, node: Command | Test, tags: dict[str, object]) -> dict[str, object]:
        kinds = [t for t in ("is", "contains", "matches", "count", "value") if t in tags]
        if len(kinds) > 1:
            raise SieveSyntaxError(node.line, f"{node.name}: more than one match type")
        match = kinds[0] if kinds else "is"
        relation = None
        if match in ("count", "value"):
            self._need("relational", node.line, f":{match}")
            relation = str(tags[match]).lower()
            if relation not in RELATIONS:
                raise SieveSyntaxError(node.line, f"unknown relational operator {relation!r}")
        comparator = str(tags.get("comparator", "i;ascii-casemap")).lower()
        if comparator not in COMPARATORS:
            raise SieveSyntaxError(node.line, f"unknown comparator {comparator!r}")
        if comparator == "i;ascii-numeric":
            self._need("comparator-i;ascii-numeric", node.line, "comparator i;ascii-numeric")
        return {"match": match, "relation": relation, "comparator": comparator}

    def _address_part(self, node: Command | Test, tags: dict[str, object]) -> str:
        parts = [t for t in ("all", "localpart", "domain", "user", "detail") if t in tags]
        if len(parts) > 1:
            raise SieveSyntaxError(node.line, f"{node.name}: more than one address part")
        part = parts[0] if parts else "all"
        if part in ("user", "detail"):
            self._need("subaddress", node.line, f":{part}")
        return part

    # -- tests --------------------------------------------------------------------

    def _test(self, test: Test) -> None:
        name = test.name
        match_flags = self._MATCH_FLAGS
        if name in ("address", "envelope", "header"):
            if name == "envelope":
                self._need("envelope", test.line, "envelope")
            flags = set(match_flags)
            if name != "header":
                flags |= {"all", "localpart", "domain", "user", "detail"}
            tags, pos = self._split(test, dict(self._MATCH_VALUES), flags)
            self._positional(test, pos, 2)
            self._no_tests(test)
            test.checked = self._match(test, tags)
            if name != "header":
                test.checked["part"] = self._address_part(test, tags)
            test.checked["headers"] = self._strings(pos[0], "header names", test.line)
            test.checked["keys"] = self._strings(pos[1], "keys", test.line)
        elif name == "exists":
            tags, pos = self._split(test, {}, set())
            self._positional(test, pos, 1)
            self._no_tests(test)
            test.checked = {"headers": self._strings(pos[0], "header names", test.line)}
        elif name == "size":
            tags, pos = self._split(test, {}, {"over", "under"})
            self._positional(test, pos, 1)
            self._no_tests(test)
            if len(tags) != 1 or not isinstance(pos[0], Number):
                raise SieveSyntaxError(test.line, "size: expected :over or :under and a number")
            test.checked = {"over": "over" in tags, "limit": pos[0].value}
        elif name in ("true", "false"):
            self._split(test, {}, set())
            if test.args:
                raise SieveSyntaxError(test.line, f"{name}: takes no arguments")
            self._no_tests(test)
        elif name == "not":
            if test.args or len(test.tests) != 1:
                raise SieveSyntaxError(test.line, "not: expected one test")
            self._test(test.tests[0])
        elif name in ("allof", "anyof"):
            if test.args or not test.tests:
                raise SieveSyntaxError(test.line, f"{name}: expected a test list")
            for sub in test.tests:
                self._test(sub)
        elif name == "body":
            self._need("body", test.line, "body")
            values = dict(self._MATCH_VALUES)
            values["content"] = "strings"
            tags, pos = self._split(test, values, match_flags | {"raw", "text"})
            self._positional(test, pos, 1)
            self._no_tests(test)
            transforms = [t for t in ("raw", "text", "content") if t in tags]
            if len(transforms) > 1:
                raise SieveSyntaxError(test.line, "body: more than one body transform")
            test.checked = self._match(test, tags)
            test.checked["transform"] = transforms[0] if transforms else "text"
            test.checked["content_types"] = tags.get("content", [])
            test.checked["keys"] = self._strings(pos[0], "keys", test.line)
        elif name == "string":
            self._need("variables", test.line, "string")
            tags, pos = self._split(test, dict(self._MATCH_VALUES), match_flags)
            self._positional(test, pos, 2)
            self._no_tests(test)
            test.checked = self._match(test, tags)
            test.checked["sources"] = self._strings(pos[0], "source", test.line)
            test.checked["keys"] = self._strings(pos[1], "keys", test.line)
        elif name in ("date", "currentdate"):
            self._need("date", test.line, name)
            values = dict(self._MATCH_VALUES)
            values["zone"] = "string"
            flags = match_flags | ({"originalzone"} if name == "date" else set())
            tags, pos = self._split(test, values, flags)
            self._positional(test, pos, 3 if name == "date" else 2)
            self._no_tests(test)
            if "zone" in tags and "originalzone" in tags:
                raise SieveSyntaxError(test.line, "date: :zone and :originalzone together")
            test.checked = self._match(test, tags)
            if name == "date":
                test.checked["header"] = self._string(pos[0], "header name", test.line)
                pos = pos[1:]
            part = self._string(pos[0], "date part", test.line).lower()
            if part not in DATE_PARTS:
                raise SieveSyntaxError(test.line, f"{name}: unknown date part {part!r}")
            zone = tags.get("zone")
            if zone is not None and not re.fullmatch(r"[+-][0-9]{4}", str(zone)):
                raise SieveSyntaxError(test.line, f"{name}: bad :zone {zone!r}")
            test.checked.update(
                part=part,
                zone=zone,
                originalzone="originalzone" in tags,
                keys=self._strings(pos[1], "keys", test.line),
            )
        elif name == "hasflag":
            self._need("imap4flags", test.line, "hasflag")
            tags, pos = self._split(test, dict(self._MATCH_VALUES), match_flags)
            self._no_tests(test)
            if len(pos) not in (1, 2):
                raise SieveSyntaxError(test.line, "hasflag: expected [variables] flags")
            test.checked = self._match(test, tags)
            test.checked["variables"] = (
                self._strings(pos[0], "variable names", test.line) if len(pos) == 2 else None
            )
            test.checked["keys"] = self._strings(pos[-1], "flags", test.line)
        elif name == "mailboxexists":
            self._need("mailbox", test.line, "mailboxexists")
            tags, pos = self._split(test, {}, set())
            self._positional(test, pos, 1)
            self._no_tests(test)
            test.checked = {"names": self._strings(pos[0], "mailbox names", test.line)}
        elif name == "duplicate":
            self._need("duplicate", test.line, "duplicate")
            tags, pos = self._split(
                test,
                {"handle": "string", "header": "string", "uniqueid": "string", "seconds": "number"},
                {"last"},
            )
            self._positional(test, pos, 0)
            self._no_tests(test)
            if "header" in tags and "uniqueid" in tags:
                raise SieveSyntaxError(test.line, "duplicate: :header and :uniqueid together")
            test.checked = dict(tags)
        else:
            raise SieveSyntaxError(test.line, f"unknown test {name!r}")

    # -- commands -----------------------------------------------------------------

    def _command(self, command: Command) -> None:
        name = command.name
        if name not in ("if", "elsif", "else") and command.block is not None:
            raise SieveSyntaxError(command.line, f"{name}: takes no block")
        if name in ("if", "elsif"):
            if command.args or len(command.tests) != 1 or command.block is None:
                raise SieveSyntaxError(command.line, f"{name}: expected a test and a block")
            self._test(command.tests[0])
            self._block(command.block)
            return
        if name == "else":
            if command.args or command.tests or command.block is None:
                raise SieveSyntaxError(command.line, "else: expected a block")
            self._block(command.block)
            return
        self._no_tests(command)
        if name == "require":
            tags, pos = self._split(command, {}, set())
            self._positional(command, pos, 1)
            for ext in self._strings(pos[0], "extension names", command.line):
                if ext.lower() not in EXTENSIONS:
                    raise SieveSyntaxError(command.line, f"unsupported extension {ext!r}")
                self.required.add(ext.lower())
            return
        if name in ("stop", "discard", "return"):
            if command.args:
                raise SieveSyntaxError(command.line, f"{name}: takes no arguments")
            if name == "return":
                self._need("include", command.line, "return")
            return
        if name == "keep":
            tags, pos = self._split(command, {"flags": "strings"}, set())
            self._positional(command, pos, 0)
            if "flags" in tags:
                self._need("imap4flags", command.line, ":flags")
            command.checked = {"flags": tags.get("flags")}
        elif name == "fileinto":
            self._need("fileinto", command.line, "fileinto")
            tags, pos = self._split(command, {"flags": "strings"}, {"copy", "create"})
            self._positional(command, pos, 1)
            for tag, ext in (("flags", "imap4flags"), ("copy", "copy"), ("create", "mailbox")):
                if tag in tags:
                    self._need(ext, command.line, f":{tag}")
            command.checked = {
                "folder": self._string(pos[0], "folder name", command.line),
                "flags": tags.get("flags"),
                "copy": "copy" in tags,
                "create": "create" in tags,
            }
        elif name == "redirect":
            tags, pos = self._split(command, {}, {"copy"})
            self._positional(command, pos, 1)
            if "copy" in tags:
                self._need("copy", command.line, ":copy")
            command.checked = {
                "address": self._string(pos[0], "address", command.line),
                "copy": "copy" in tags,
            }
        elif name in ("reject", "ereject"):
            self._need(name, command.line, name)
            tags, pos = self._split(command, {}, set())
            self._positional(command, pos, 1)
            command.checked = {"reason": self._string(pos[0], "reason", command.line)}
        elif name in ("setflag", "addflag", "removeflag"):
            self._need("imap4flags", command.line, name)
            tags, pos = self._split(command, {}, set())
            if len(pos) not in (1, 2):
                raise SieveSyntaxError(command.line, f"{name}: expected [variable] flags")
            variable = (
                self._string(pos[0], "variable name", command.line) if len(pos) == 2 else None
            )
            command.checked = {
                "variable": variable,
                "flags": self._strings(pos[-1], "flags", command.line),
            }
        elif name == "set":
            self._need("variables", command.line, "set")
            tags, pos = self._split(command, {}, set(SET_MODIFIERS))
            self._positional(command, pos, 2)
            var = self._string(pos[0], "variable name", command.line)
            if not VARIABLE_NAME.match(var):
                raise SieveSyntaxError(command.line, f"set: bad variable name {var!r}")
            modifiers = sorted(tags, key=lambda m: -SET_MODIFIERS[m])
            command.checked = {
                "name": var.lower(),
                "value": self._string(pos[1], "value", command.line),
                "modifiers": modifiers,
            }
        elif name == "vacation":
            self._need("vacation", command.line, "vacation")
            tags, pos = self._split(
                command,
                {
                    "days": "number",
                    "subject": "string",
                    "from": "string",
                    "addresses": "strings",
                    "handle": "string",
                },
                {"mime"},
            )
            self._positional(command, pos, 1)
            command.checked = dict(tags)
            command.checked["reason"] = self._string(pos[0], "reason", command.line)
        elif name == "include":
            self._need("include", command.line, "include")
            tags, pos = self._split(command, {}, {"personal", "global", "once", "optional"})
            self._positional(command, pos, 1)
            if "personal" in tags and "global" in tags:
                raise SieveSyntaxError(command.line, "include: :personal and :global together")
            script = self._string(pos[0], "script name", command.line)
            if not re.fullmatch(r"[^/\x00-\x1f\x7f]{1,255}", script) or script.startswith("."):
                raise SieveSyntaxError(command.line, f"include: bad script name {script!r}")
            command.checked = {
                "location": "global" if "global" in tags else "personal",
                "once": "once" in tags,
                "optional": "optional" in tags,
                "name": script,
            }
        elif name == "global":
            self._need("include", command.line, "global")
            self._need("variables", command.line, "global")
            tags, pos = self._split(command, {}, set())
            self._positional(command, pos, 1)
            names = self._strings(pos[0], "variable names", command.line)
            for var in names:
                if not VARIABLE_NAME.match(var):
                    raise SieveSyntaxError(command.line, f"global: bad variable name {var!r}")
            command.checked = {"names": [n.lower() for n in names]}
        else:
            raise SieveSyntaxError(command.line, f"unknown command {name!r}")


def compile_script(source: bytes, max_size: int = 1 << 20) -> tuple[list[Command], set[str]]:
    """Parse and check a script: (commands, required extensions)."""
    if len(source) > max_size:
        raise SieveSyntaxError(1, f"script is larger than {max_size} bytes")
    commands = parse(source)
    checker = Checker()
    checker.check(commands)
    return commands, checker.required
