"""The Sieve parser and checker (RFC 5228 section 8 and the extensions' grammar)."""

from __future__ import annotations

import pytest

from pymta.sieve.check import compile_script
from pymta.sieve.grammar import MAX_NESTING, SieveSyntaxError, StringList, parse


def test_lexical_forms() -> None:
    """Comments, quoted strings with escapes, text: multi-line strings with
    dot-stuffing, numbers with quantifiers, string lists and test lists."""
    commands = parse(
        b"# hash comment\r\n/* bracket\ncomment */ if anyof (size :over 1K, true) {\n"
        b'  fileinto "a\\"b\\\\c\\d";\n'
        b"  vacation text: # comment\r\n..dot\r\nline\r\n.\r\n;\n"
        b'} require ["x", "y"];\n'
    )
    assert [c.name for c in commands] == ["if", "require"]
    test = commands[0].tests[0]
    assert test.name == "anyof" and [t.name for t in test.tests] == ["size", "true"]
    size_args = test.tests[0].args
    assert size_args[1].value == 1024  # type: ignore[union-attr]
    block = commands[0].block or []
    assert block[0].args[0].values == ['a"b\\cd']  # type: ignore[union-attr]
    assert block[1].args[0].values == [".dot\r\nline\r\n"]  # type: ignore[union-attr]
    req = commands[1].args[0]
    assert isinstance(req, StringList) and req.values == ["x", "y"] and not req.single


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        (b"keep", 1, "expected ';'"),
        (b'\n\nfileinto "x";', 3, 'needs require "fileinto"'),
        (b'require "nosuch";', 1, "unsupported extension"),
        (b'keep;\nrequire "fileinto";', 2, "require must come before"),
        (b"else { keep; }", 1, "else without if"),
        (b'if header :is "a" { keep; }', 1, "expected 2 argument"),
        (b'if header :bogus "a" "b" { keep; }', 1, "unknown tag :bogus"),
        (b'if header :is :contains "a" "b" { keep; }', 1, "more than one match type"),
        (b'if header :count "ge" "a" "1" { keep; }', 1, 'needs require "relational"'),
        (
            b'require "relational"; if header :value "zz" "a" "1" { keep; }',
            1,
            "relational operator",
        ),
        (b'if address :detail "to" "x" { keep; }', 1, 'needs require "subaddress"'),
        (b'if header :comparator "i;bogus" "a" "b" { keep; }', 1, "unknown comparator"),
        (b'"unterminated', 1, "unterminated string"),
        (b"vacation text:\nno end\n", 1, "unterminated text:"),
        (b"/* open", 1, "unterminated /* comment"),
        (b"frobnicate;", 1, "unknown command"),
        (b"if frob { keep; }", 1, "unknown test"),
        (b'require "include"; include "../x";', 1, "bad script name"),
        (b"keep { }", 1, "takes no block"),
        (b"redirect;", 1, "expected 1 argument"),
        (b"\xff;", 1, "unexpected character"),
        (b'require "variables"; set "1bad" "x";', 1, "bad variable name"),
    ],
)
def test_errors_name_the_line(script: bytes, line: int, fragment: str) -> None:
    """Each malformed script is a SieveSyntaxError with its line number."""
    with pytest.raises(SieveSyntaxError) as caught:
        compile_script(script)
    assert caught.value.line == line
    assert fragment in caught.value.message


def test_nesting_and_size_are_bounded() -> None:
    """Blocks or tests nested past the limit, and a script over the size
    limit, are refused without recursion errors."""
    deep = b"if true {" * (MAX_NESTING + 5) + b"}" * (MAX_NESTING + 5)
    with pytest.raises(SieveSyntaxError, match="nested too deeply"):
        compile_script(deep)
    tests = b"if " + b"not " * 10000 + b"true { keep; }"
    with pytest.raises(SieveSyntaxError, match="nested too deeply"):
        compile_script(tests)
    with pytest.raises(SieveSyntaxError, match="larger than"):
        compile_script(b"keep;" * 100, max_size=10)


def test_encoded_character_is_decoded_when_required() -> None:
    """${hex:..} and ${unicode:..} are decoded with encoded-character only."""
    commands, _ = compile_script(
        b'require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}${unicode:263a}";'
    )
    assert commands[1].checked["folder"] == "AB\u263a"
    commands, _ = compile_script(b'require "fileinto"; fileinto "${hex:41}";')
    assert commands[1].checked["folder"] == "${hex:41}"


def test_every_extension_checks() -> None:
    """A script using every supported extension compiles."""
    compile_script(
        b"""require ["fileinto", "reject", "ereject", "envelope", "encoded-character",
  "variables", "vacation", "relational", "subaddress", "copy", "imap4flags", "body",
  "date", "include", "mailbox", "duplicate", "comparator-i;ascii-numeric"];
if envelope :user "to" "alice" { fileinto :copy :flags "\\\\Seen" :create "A"; }
if body :text :contains "x" { ereject "no"; }
if date :originalzone "date" "year" "2020" { reject "old"; }
if currentdate :zone "+0100" :value "ge" "hour" "09" { addflag "x"; }
if hasflag :contains "x" { removeflag "x"; setflag "v" "y"; }
if mailboxexists "A" { keep :flags "\\\\Flagged"; }
if duplicate :handle "h" :header "message-id" :seconds 60 :last { discard; }
if string :count "eq" :comparator "i;ascii-numeric" "${v}" "1" { set :upper "n" "x"; }
include :global :once :optional "common";
global "n";
vacation :days 3 :subject "Away" :from "a@b.c" :addresses ["x@y.z"] :handle "h" "reason";
redirect :copy "other@example.test";
return;
"""
    )
