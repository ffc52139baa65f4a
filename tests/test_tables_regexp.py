"""regexp: and pcre: tables: rule syntax, flags, substitution, if/endif, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.tables import TableError, open_table
from pymta.tables.regexp import build_prefilter, evaluate, parse_rules

RULES = """\
# comment
/^(.*)-outgoing@(.*)$/   ${1}@$2
/^Special@/i             case-sensitive
/^user@(example\\.test)$/  found $1 $$5
!/@/                     no-domain
if /@lists\\./
/^owner-/                owner-of-list
/./                      list-member
endif
if !/\\.test$/
/^x/                     x-not-test
endif
|^pipe|                  other-delimiter
/^multi/
  continued-result
"""


@pytest.mark.parametrize(
    ("key", "result"),
    [
        ("bob-outgoing@example.org", "bob@example.org"),
        ("Special@x", "case-sensitive"),
        ("special@x", None),
        ("USER@EXAMPLE.TEST", "found EXAMPLE.TEST $5"),
        ("localonly", "no-domain"),
        ("owner-a@lists.example", "owner-of-list"),
        ("bob@lists.example", "list-member"),
        ("xavier@example.org", "x-not-test"),
        ("xavier@example.test", None),
        ("pipe@a.test", "other-delimiter"),
        ("multi@a.test", "continued-result"),
        ("nobody@example.org", None),
    ],
)
@pytest.mark.parametrize("flavour", ["regexp", "pcre"])
def test_rules(flavour: str, key: str, result: str | None) -> None:
    """Rules apply in order: case-insensitive by default, i toggles, $n substitutes, !/re/ negates,
    if/endif guard.
    """
    rules, problems = parse_rules(RULES, "f", flavour)
    assert problems == []
    assert evaluate(rules, key) == result


def test_unmatched_group_is_empty() -> None:
    """A $n whose group did not take part in the match expands to nothing."""
    rules, _ = parse_rules("/^a(b)?(c)$/ [$1][$2]\n", "f", "regexp")
    assert evaluate(rules, "ac") == "[][c]"


def test_flags_m_and_x() -> None:
    """Flag x allows white space in the pattern; m makes ^ match after a newline."""
    rules, problems = parse_rules("/ a b c /x spaced\n/^two/m multi\n", "f", "regexp")
    assert problems == []
    assert evaluate(rules, "abc") == "spaced"
    assert evaluate(rules, "one\ntwo") == "multi"


def test_pcre_only_flags() -> None:
    """pcre: accepts s and A; regexp: refuses them."""
    rules, problems = parse_rules("/^a.b$/s dotall\n/b/A anchored\n", "f", "pcre")
    assert problems == []
    assert evaluate(rules, "a\nb") == "dotall"
    assert evaluate(rules, "ab") is None  # /b/A must match at the start
    _rules, problems = parse_rules("/a/s x\n", "f", "regexp")
    assert "unknown flag 's'" in str(problems[0])


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        ("/abc result\n", 1, "no closing '/'"),
        ("/abc/\n", 1, "no result"),
        ("/a(/ x\n", 1, "bad pattern"),
        ("/a/q x\n", 1, "unknown flag 'q'"),
        ("/(a)/ $2\n", 1, "out of range substitution $2"),
        ("!/(a)/ $1\n", 1, "negated rule"),
        ("ok-line\n", 1, "expected /pattern/"),
        ("/a/ x\nendif\n", 2, "endif without matching if"),
        ("if /a/\n/b/ c\n", 2, "missing endif"),
        ("if /a/ extra\n/b/ c\nendif\n", 1, "text after if pattern"),
        ("/^(.*)*-x@/ REJECT\n", 1, "can take exponential time"),
        ("/^(\\S+\\s*)+$/ REJECT\n", 1, "can take exponential time"),
    ],
)
def test_parse_errors(text: str, lineno: int, message: str) -> None:
    """Each syntax error is reported with the file name and line number."""
    _rules, problems = parse_rules(text, "/etc/x.re", "regexp")
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"/etc/x.re, line {lineno}: ")
    assert message in str(problems[0])


def test_bad_if_skips_its_block() -> None:
    """The rules inside an if with a bad pattern never apply; the rest still do."""
    rules, problems = parse_rules("if /a(/\n/./ inside\nendif\n/./ outside\n", "f", "regexp")
    assert len(problems) == 1
    assert evaluate(rules, "a") == "outside"


def test_strict_open_names_file_and_line(tmp_path: Path) -> None:
    """A strict open of a regexp file with a bad rule raises TableError naming file and line."""
    path = tmp_path / "bad.re"
    path.write_text("/ok/ fine\n/a(/ broken\n")
    with pytest.raises(TableError, match=r"bad\.re, line 2: bad pattern"):
        open_table(f"regexp:{path}", strict=True)
    # Not strict: the bad rule is skipped, as Postfix does, and the good one works.
    assert open_table(f"regexp:{path}").lookup("ok") == "fine"


def test_regexp_keys_not_folded(tmp_path: Path) -> None:
    """regexp: sees the key as given, so a case-sensitive rule can tell cases apart."""
    path = tmp_path / "r"
    path.write_text("/^Abc$/i upper\n/^abc$/i lower\n")
    table = open_table(f"regexp:{path}")
    assert table.lookup("Abc") == "upper"
    assert table.lookup("abc") == "lower"


def test_regexp_reload_after_change(tmp_path: Path) -> None:
    """A regexp: file is re-read once the injected clock passes the next check after a change."""
    import os

    path = tmp_path / "r"
    path.write_text("/a/ old\n")
    now = [0.0]
    table = open_table(f"regexp:{path}", clock=lambda: now[0])
    assert table.lookup("a") == "old"
    path.write_text("/a/ newer\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert table.lookup("a") == "old"
    now[0] = 1.0
    assert table.lookup("a") == "newer"


PREFILTERED = """\
/^Subject:.*\\bviagra\\b/      REJECT
/^x-spam-flag: yes$/m        HOLD
/^Content-Type:.*name="?.*\\.(exe|scr)"?/ REJECT bad $1
/CaseSensitive/i             cs
if /^Received:/
/from evil\\.example/         REJECT
endif
/ a  b  # verbose comment/x  verbose
"""
DOTALL = "/^Dot.+line$/s  dotall\n"  # pcre: only

KEYS = [
    "Subject: buy VIAGRA now",
    "Subject: hello",
    "X-Spam-Flag: no\nx-spam-flag: yes",
    'Content-Type: application/octet-stream; name="a.exe"',
    "casesensitive",
    "xx CaseSensitive",
    "Received: from evil.example",
    "X-Note: from evil.example",
    "ab",
    "Dot\nline",
    "",
]


@pytest.mark.parametrize("flavour", ["regexp", "pcre"])
def test_prefilter_answers_as_the_rules_do(tmp_path: Path, flavour: str) -> None:
    """The one-pattern prefilter (body_checks speed) never changes an answer:
    lookup equals rule-by-rule evaluation for every key."""
    path = tmp_path / "t"
    text = PREFILTERED + (DOTALL if flavour == "pcre" else "")
    path.write_text(text)
    table = open_table(f"{flavour}:{path}", strict=True)
    rules, problems = parse_rules(text, str(path), flavour)
    assert problems == [] and build_prefilter(rules) is not None
    answers = [table.lookup(key) for key in KEYS]
    assert answers == [evaluate(rules, key) for key in KEYS]
    assert answers[:4] == ["REJECT", None, "HOLD", "REJECT bad exe"]


def test_no_prefilter_for_negated_rules_or_back_references() -> None:
    """A negated rule answers when its pattern does not match, and group
    references change meaning when merged: such tables get no prefilter."""
    negated, _ = parse_rules("!/@/ x\n", "t", "regexp")
    backref, _ = parse_rules("/(a)\\1/ x\n", "t", "regexp")
    assert build_prefilter(negated) is None and build_prefilter(backref) is None


@pytest.mark.parametrize(
    "pattern",
    [r"([a-z0-9]+\.)+example\.com$", r"^(.+)@(.+)$", r"^Subject: .*(viagra|cialis)", r"(?>(a+))+b"],
)
def test_ordinary_repetitions_are_kept(pattern: str) -> None:
    """Repetitions that split a key one way only (a required separator, no
    nesting, an atomic group) are not refused."""
    rules, problems = parse_rules(f"/{pattern}/ OK\n", "f", "regexp")
    assert problems == [] and len(rules) == 1


def test_nested_repetition_is_refused_before_it_can_stall() -> None:
    """A rule that nests unbounded repetitions (found by fuzzing: 17 s of CPU
    for one 29-character key) is a bad rule, so the lookup of a long key that
    almost matches returns at once instead of backtracking for hours."""
    rules, problems = parse_rules("/^(.*)*-o@(.*)$/ ${1}@$2\n/./ other\n", "f", "regexp")
    assert len(problems) == 1
    assert evaluate(rules, "owner-list@lists.example.test" * 3) == "other"
