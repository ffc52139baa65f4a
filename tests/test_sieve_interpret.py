"""The Sieve interpreter: tests, actions and the extensions' semantics."""

from __future__ import annotations

import time

import pytest

from pymta.sieve.check import compile_script
from pymta.sieve.grammar import Command
from pymta.sieve.interpret import (
    Interpreter,
    Message,
    Outcome,
    SieveRuntimeError,
    glob_match,
)

HEADER = (
    b"From: Alice Example <alice@example.org>\n"
    b"To: Bob <bob+lists@example.test>, carol@example.test\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= [pymta-dev] weekly\n"
    b"Date: Tue, 01 Dec 2026 10:30:00 +0100\n"
    b"Message-ID: <m1@example.org>\n"
    b"Received: from a\n"
    b"Received: from b\n"
    b"X-Priority: 12\n"
)
BODY = b"Hello,\nthe password is swordfish.\n"


def message(**overrides: object) -> Message:
    fields: dict[str, object] = {
        "header": HEADER,
        "body": lambda: BODY,
        "size": len(HEADER) + len(BODY),
        "envelope_from": "alice@example.org",
        "envelope_to": "bob+lists@example.test",
        "user_addresses": ("bob@example.test",),
        "now": 1_796_000_000.0,  # 2026-11-29
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def run(script: str, **overrides: object) -> Outcome:
    commands, required = compile_script(script.encode())
    return Interpreter(message(**overrides), required).run(commands)


def folders(outcome: Outcome) -> list[str]:
    return [a.folder for a in outcome.actions if a.kind in ("keep", "fileinto")]


def test_implicit_keep_and_explicit_actions() -> None:
    """No action: implicit keep. fileinto cancels it, :copy does not,
    discard cancels it, keep is INBOX; the same folder is filed once."""
    assert run("").implicit_keep
    out = run('require "fileinto"; fileinto "A"; fileinto "A";')
    assert folders(out) == ["A"] and not out.implicit_keep
    out = run('require ["fileinto", "copy"]; fileinto :copy "A";')
    assert out.implicit_keep
    assert not run("discard;").implicit_keep
    assert folders(run("keep; require_not_here;".replace("require_not_here;", ""))) == ["INBOX"]


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('header :contains "subject" "café"', True),  # RFC 2047 decoded
        ('header :is "subject" "CAFÉ [PYMTA-DEV] WEEKLY"', False),  # casemap is ASCII only
        ('header :is "Subject" "CAFé [PYMTA-DEV] WEEKLY"', True),
        ('header :comparator "i;octet" :contains "subject" "WEEKLY"', False),
        ('header :matches "subject" "*[pymta-*]*"', True),
        ('header :matches "subject" "caf? *"', True),
        ('address :domain "from" "example.org"', True),
        ('address :localpart :is "to" "carol"', True),
        ('address :all :is ["to", "cc"] "bob+lists@example.test"', True),
        ('address :user "to" "bob"', True),
        ('address :detail "to" "lists"', True),
        ('address :detail :matches "to" "*"', True),  # bob has a detail (carol none)
        ('envelope :is "from" "alice@example.org"', True),
        ('envelope :detail "to" "lists"', True),
        ('exists ["from", "date"]', True),
        ('exists ["from", "x-nope"]', False),
        ("size :over 100", True),
        ("size :under 100", False),
        ('header :count "eq" :comparator "i;ascii-numeric" "received" "2"', True),
        ('header :count "gt" :comparator "i;ascii-numeric" "received" "2"', False),
        ('header :value "gt" :comparator "i;ascii-numeric" "x-priority" "9"', True),
        ('header :value "lt" "x-priority" "2"', True),  # as text "12" < "2"
        ('body :contains "swordfish"', True),
        ('body :raw :contains "password is"', True),
        ('body :content "image" :contains "swordfish"', False),
        ('date :originalzone "date" "hour" "10"', True),
        ('date :zone "+0000" "date" "time" "09:30:00"', True),
        ('date :zone "-0500" "date" "weekday" "2"', True),
        ('currentdate :zone "+0000" "year" "2026"', True),
        ("not true", False),
        ("allof (true, false)", False),
        ("anyof (false, true)", True),
    ],
)
def test_tests(test: str, expected: bool) -> None:
    """Each test against the sample message (RFC 5228 section 5 and the
    envelope, subaddress, relational, body and date extensions)."""
    script = (
        'require ["envelope", "subaddress", "relational", "body", "date", '
        f'"comparator-i;ascii-numeric", "fileinto"]; if {test} {{ fileinto "Y"; }}'
    )
    assert (folders(run(script)) == ["Y"]) is expected


def test_null_sender_is_an_empty_envelope_from() -> None:
    """envelope "from" of the null sender is "" (RFC 5228 section 5.4)."""
    out = run(
        'require ["envelope", "fileinto"]; if envelope :is "from" "" { fileinto "N"; }',
        envelope_from="",
    )
    assert folders(out) == ["N"]


def test_variables_match_variables_and_modifiers() -> None:
    """:matches sets ${1}..; set with modifiers; string test; unknown
    variables are empty (RFC 5229)."""
    out = run(
        'require ["variables", "fileinto"];\n'
        'if header :matches "subject" "* [*] *" { set :upperfirst "list" "${2}"; }\n'
        'set :length "n" "${list}";\n'
        'if string :is "${n}" "9" { fileinto "Lists/${list}${nosuch}"; }'
    )
    assert folders(out) == ["Lists/Pymta-dev"]


def test_imap4flags() -> None:
    """addflag/removeflag/setflag on the internal variable and on a named
    one; keep and fileinto take the current flags unless :flags; hasflag."""
    out = run(
        'require ["imap4flags", "fileinto", "variables"];\n'
        'addflag "\\\\Seen"; addflag ["\\\\Flagged", "\\\\seen"];\n'
        'fileinto "A";\n'
        'removeflag "\\\\Seen";\n'
        'setflag "v" "$x"; addflag "v" "$y";\n'
        'if hasflag :is "v" "$y" { fileinto :flags "${v}" "B"; }\n'
        'if hasflag :contains "flagged" { keep; }'
    )
    by_folder = {a.folder: a.flags for a in out.actions}
    assert by_folder == {
        "A": ("\\Seen", "\\Flagged"),
        "B": ("$x", "$y"),
        "INBOX": ("\\Flagged",),
    }


def test_reject_conflicts_and_limits() -> None:
    """reject with fileinto is a runtime error; more redirects than allowed
    too; a redirect to the same address counts once."""
    with pytest.raises(SieveRuntimeError):
        run('require ["reject", "fileinto"]; fileinto "A"; reject "no";')
    out = run('require "reject"; reject "go away";')
    assert [a.kind for a in out.actions] == ["reject"] and not out.implicit_keep
    many = "".join(f'redirect "u{i}@example.net";' for i in range(5))
    with pytest.raises(SieveRuntimeError, match="redirects"):
        run(many)
    out = run('redirect "a@example.net"; redirect "A@example.net";')
    assert [a.address for a in out.actions] == ["a@example.net"]


def test_stop_ends_the_script() -> None:
    out = run('require "fileinto"; fileinto "A"; stop; fileinto "B";')
    assert folders(out) == ["A"]


def test_duplicate() -> None:
    """duplicate is false the first time and records the ID; with the ID
    seen it is true (RFC 7352)."""
    script = 'require ["duplicate", "fileinto"]; if duplicate { fileinto "Dup"; }'
    first = run(script)
    assert folders(first) == [] and len(first.duplicate_marks) == 1
    key = first.duplicate_marks[0][0]
    again = run(script, seen=lambda k: k == key)
    assert folders(again) == ["Dup"] and again.duplicate_marks == []


VACATION = 'require "vacation"; vacation :days 2 :subject "Away" "I am away.";'


def test_vacation_replies_once_per_sender_and_period() -> None:
    """A vacation to the sender of mail addressed to the user, with a
    tracking key; once the key was seen, no reply."""
    out = run(VACATION)
    (action,) = out.actions
    assert action.kind == "vacation" and action.address == "alice@example.org"
    assert action.vacation["seconds"] == 2 * 86400
    assert out.implicit_keep
    again = run(VACATION, seen=lambda k: k == action.vacation["key"])
    assert again.actions == []


@pytest.mark.parametrize(
    ("header_extra", "sender"),
    [
        (b"Auto-Submitted: auto-replied\n", "alice@example.org"),
        (b"List-Id: <dev.example.org>\n", "alice@example.org"),
        (b"Precedence: bulk\n", "alice@example.org"),
        (b"", ""),
        (b"", "MAILER-DAEMON@example.org"),
        (b"", "owner-dev@example.org"),
        (b"", "bob@example.test"),
    ],
)
def test_vacation_never_answers(header_extra: bytes, sender: str) -> None:
    """No reply to auto-submitted mail, lists, bulk, the null sender,
    daemons, list owners or the user's own address (RFC 5230 4.5, RFC 3834)."""
    assert run(VACATION, header=HEADER + header_extra, envelope_from=sender).actions == []


def test_vacation_only_for_mail_to_the_user() -> None:
    """Mail whose To/Cc does not name the user (or :addresses) gets no reply."""
    header = HEADER.replace(b"To: Bob <bob+lists@example.test>, ", b"To: ")
    assert run(VACATION, header=header).actions == []
    script = 'require "vacation"; vacation :addresses "carol@example.test" "away";'
    assert len(run(script, header=header).actions) == 1


def test_include_global_and_return() -> None:
    """include runs the named script with its own variables except the
    global ones; return ends only the included script; a missing script is
    an error unless :optional."""
    library = {
        ("personal", "lib"): 'require ["include", "variables", "fileinto"]; global "g";\n'
        'set "local" "L"; fileinto "Lib-${g}"; return; fileinto "Never";',
    }

    def include(location: str, name: str) -> list[Command] | None:
        source = library.get((location, name))
        return None if source is None else compile_script(source.encode())[0]

    out = run(
        'require ["include", "variables", "fileinto"]; global "g"; set "g" "G";\n'
        'include "lib"; include :optional "nosuch"; fileinto "After-${local}";',
        include=include,
    )
    assert folders(out) == ["Lib-G", "After-"]
    with pytest.raises(SieveRuntimeError, match="not found"):
        run('require "include"; include :global "nosuch";', include=include)


def test_include_recursion_is_bounded() -> None:
    """A script including itself stops at the nesting limit."""

    def include(location: str, name: str) -> list[Command] | None:
        return compile_script(b'require "include"; include "self";')[0]

    with pytest.raises(SieveRuntimeError, match="nested too deeply"):
        run('require "include"; include "self";', include=include)


def test_glob_match_is_linear() -> None:
    """Many wildcards against a long value: the non-capturing matcher
    answers at once (no exponential backtracking)."""
    started = time.process_time()
    assert not glob_match("*a" * 40 + "b", "a" * 20000)
    assert glob_match("*a*?c\\*", "xxaYc*")
    assert time.process_time() - started < 5
