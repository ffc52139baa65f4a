"""Sieve: a user's script (what ManageSieve's PUTSCRIPT accepts from a
logged-in user) compiled and run against a message.

The input is a script, then a NUL byte, then a message's header section
(the part before the NUL is the script; without a NUL the whole input is the
script and a fixed message is used). The script goes through
pymta.sieve.check.compile_script (the parser and the checker PUTSCRIPT and
delivery use), and a script that compiles is run by the interpreter against
the message, as delivery runs it. Documented errors:
:class:`~pymta.sieve.grammar.SieveSyntaxError` (PUTSCRIPT's NO, delivery's
"keep into INBOX") and :class:`~pymta.sieve.interpret.SieveRuntimeError`
(the same keep). Anything else, or a run over 1 s, is a finding: the mail
would be kept, but the user's filter would never run. Checked besides: a run
gives at most the interpreter's action limit.
"""

from __future__ import annotations

from fuzz.common import Finding
from pymta.sieve.check import compile_script
from pymta.sieve.grammar import SieveSyntaxError
from pymta.sieve.interpret import Interpreter, Message, SieveRuntimeError

EXPECTED: tuple[type[BaseException], ...] = (SieveSyntaxError, SieveRuntimeError)

_HEADER = (
    b"From: Alice <alice@example.org>\nTo: bob+lists@example.test\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= report\nDate: Sun, 29 Nov 2026 10:00:00 +0100\n"
    b"List-Id: <list.example.org>\nX-Priority: 12\n"
)
_BODY = b"Hello,\nthe password is swordfish.\n"
MAX_ACTIONS = 32


def seeds() -> list[bytes]:
    """Scripts of the kinds tests/test_sieve_interpret.py runs."""
    scripts = [
        b'require ["fileinto", "imap4flags"];\nif header :contains "subject" "report" '
        b'{ fileinto "Reports"; addflag "\\\\Seen"; } else { keep; }\n',
        b'require ["variables", "envelope", "subaddress"];\n'
        b'if envelope :detail "to" "*" { set "folder" "${1}"; }\n'
        b'if address :matches :localpart "from" "a*e" { discard; stop; }\n',
        b'require ["vacation", "relational", "comparator-i;ascii-numeric"];\n'
        b'if header :value "ge" :comparator "i;ascii-numeric" "x-priority" "10" '
        b'{ vacation :days 3 :subject "away" "I am away"; }\n',
        b'require ["body", "date", "reject", "encoded-character"];\n'
        b'if body :text :contains "swordfish" { reject "no ${hex:41}"; }\n'
        b'if date :is "date" "year" "2026" { keep; }\n',
        b'require "duplicate"; if duplicate :seconds 60 { discard; }\0' + _HEADER,
    ]
    return scripts


def one_input(data: bytes) -> None:
    script, nul, header = data.partition(b"\0")
    if not nul:
        header = _HEADER
    commands, required = compile_script(script)
    message = Message(
        header=header,
        body=lambda: _BODY,
        size=len(header) + len(_BODY),
        envelope_from="alice@example.org",
        envelope_to="bob+lists@example.test",
        user_addresses=("bob@example.test",),
        now=1_796_000_000.0,
    )
    outcome = Interpreter(message, required, max_actions=MAX_ACTIONS).run(commands)
    if len(outcome.actions) > MAX_ACTIONS:
        raise Finding(f"{len(outcome.actions)} actions past the limit of {MAX_ACTIONS}")
