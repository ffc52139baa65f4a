"""sendmail's command line, input reading, -t extraction and the maildrop format."""

from __future__ import annotations

import io

import pytest

from pymta.sendmail.message import MessageTooBig, extract_recipients, read_message
from pymta.sendmail.options import UsageError, parse
from pymta.sendmail.record import MaildropFileError, MaildropMessage, decode, encode


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a@x"], {"mode": "deliver", "recipients": ["a@x"]}),
        (["-t", "-i"], {"extract": True, "ignore_dots": True}),
        (["-ti"], {"extract": True, "ignore_dots": True}),
        (["-oi", "-oem", "-oee", "-odb", "-o7", "-om"], {"ignore_dots": True}),
        (["-f", "me@x", "b@y"], {"sender": "me@x", "recipients": ["b@y"]}),
        (["-fme@x"], {"sender": "me@x"}),
        (["-f", "<>"], {"sender": ""}),
        (["-r", "me@x"], {"sender": "me@x"}),
        (["-F", "Jo Doe"], {"full_name": "Jo Doe"}),
        (["-N", "delay,failure"], {"notify": "FAILURE,DELAY"}),
        (["-N", "never"], {"notify": "NEVER"}),
        (["-R", "hdrs", "-V", "id-1"], {"ret": "HDRS", "envid": "id-1"}),
        (["-B", "8bitmime"], {"body": "8BITMIME"}),
        (["-C", "/etc/pymta"], {"config": "/etc/pymta"}),
        (["-bp"], {"mode": "mailq"}),
        (["-bi"], {"mode": "newaliases"}),
        (["-I"], {"mode": "newaliases"}),
        (["-bs"], {"mode": "smtp"}),
        (["-bv", "a@x"], {"mode": "verify"}),
        (["-q"], {"mode": "flush"}),
        (["-q30m"], {"mode": "flush"}),
        (["-G", "-L", "cron", "-v", "-v"], {"gateway": True, "label": "cron", "verbose": 2}),
        (["-h", "5", "-O", "x=y", "-X", "/tmp/l", "-n", "-U", "-Am"], {"mode": "deliver"}),
        (["--", "-weird@x"], {"recipients": ["-weird@x"]}),
        (["a@x", "-t"], {"recipients": ["a@x", "-t"], "extract": False}),
    ],
)
def test_options_parse_like_postfix_sendmail(argv: list[str], expected: dict[str, object]) -> None:
    """Postfix's sendmail(1) options parse to what each one means; options
    end at the first recipient or at --."""
    opts = parse(argv)
    for name, value in expected.items():
        assert getattr(opts, name) == value, name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-z"], "invalid option -- 'z'"),
        (["-f"], "option requires an argument -- 'f'"),
        (["-N", "sometimes"], "bad -N option value"),
        (["-R", "all"], "bad -R option value"),
        (["-bd"], "twistd pymta"),
        (["-bx"], "unsupported -b option"),
        (["-qRexample.com"], "per-site flush"),
    ],
)
def test_bad_options_get_a_clear_error(argv: list[str], message: str) -> None:
    """Unknown flags, missing arguments and bad values are UsageErrors naming the problem."""
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(argv)


def test_lone_dot_ends_input_without_i() -> None:
    """Without -i a line holding only "." ends the message (CRLF becomes LF)."""
    data = read_message(io.BytesIO(b"Subject: x\r\n\r\nline\r\n.\r\nafter\n"), False, 0)
    assert data == b"Subject: x\n\nline\n"


def test_lone_dot_is_content_with_i() -> None:
    """With -i only end of file ends the message; dots are not unstuffed."""
    data = read_message(io.BytesIO(b"Subject: x\n\n.\n..two\nend"), True, 0)
    assert data == b"Subject: x\n\n.\n..two\nend\n"


@pytest.mark.parametrize("ignore_dots", [True, False])
def test_message_over_the_size_limit_is_refused(ignore_dots: bool) -> None:
    """A message larger than message_size_limit raises MessageTooBig."""
    with pytest.raises(MessageTooBig):
        read_message(io.BytesIO(b"x" * 70000 + b"\n"), ignore_dots, 1000)


def test_t_takes_to_cc_bcc_and_removes_bcc() -> None:
    """-t collects To, Cc and Bcc (folded, with names and groups) and removes Bcc."""
    content = (
        b"From: me@x\nTo: Alice <alice@x>,\n bob@x\nCc: undisclosed-recipients:;\n"
        b"Bcc: hidden@x,\n\tother@x\nSubject: s\n\nBcc: not-a-header@x\n"
    )
    recipients, cleaned = extract_recipients(content)
    assert recipients == ["alice@x", "bob@x", "hidden@x", "other@x"]
    assert b"hidden@x" not in cleaned and b"other@x" not in cleaned
    assert cleaned.endswith(b"Subject: s\n\nBcc: not-a-header@x\n")


def test_t_prefers_resent_headers() -> None:
    """With Resent- headers present, only Resent-To/Cc/Bcc give recipients."""
    content = b"To: old@x\nResent-To: new@x\nResent-Bcc: hid@x\n\nbody\n"
    recipients, cleaned = extract_recipients(content)
    assert recipients == ["new@x", "hid@x"]
    assert b"hid@x" not in cleaned and b"To: old@x" in cleaned


def _message() -> MaildropMessage:
    return MaildropMessage(
        recipients=[("a@x", ""), ("b\t%@x", "SUCCESS,FAILURE")],
        content=b"Subject: s\n\nbody\n",
        sender="",
        full_name="Jo\nDoe",
        attributes={"envid": "e1", "ret": "HDRS"},
        time=12.5,
    )


def test_record_round_trip() -> None:
    """encode and decode agree on every field, escapes included."""
    message = _message()
    assert decode(encode(message)) == message


def test_record_without_sender_means_default() -> None:
    """No S record: sender is None (pickup then uses the owner's login)."""
    message = _message()
    message.sender = None
    assert decode(encode(message)).sender is None


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda b: b"PYMTAM 2\n" + b[9:], "version"),
        (lambda b: b[:-2], "end marker"),
        (lambda b: b[:-10], "end marker"),
        (lambda b: b + b"extra", "end marker"),
        (lambda b: b.replace(b"N2\n", b"N3\n"), "expected record R"),
        (lambda b: b.replace(b"N2\n", b"N0\n"), "no recipients"),
        (lambda b: b.replace(b"\nL17\n", b"\nL-1\n"), "content length"),
        (lambda b: b.replace(b"\tSUCCESS,FAILURE", b"\tALWAYS"), "bad R record"),
        (lambda b: b"", "version"),
    ],
)
def test_damaged_records_are_refused(mangle: object, reason: str) -> None:
    """Truncated, extended or altered files raise MaildropFileError."""
    data = encode(_message())
    assert callable(mangle)
    with pytest.raises(MaildropFileError, match=reason):
        decode(mangle(data))


def test_unknown_attributes_are_set_apart() -> None:
    """An attribute the format does not know (a claimed uid) is not returned
    as an attribute, only named in ``ignored``."""
    data = encode(_message()).replace(b"Aenvid=e1\n", b"Aenvid=e1\nAuid=0\n")
    message = decode(data)
    assert "uid" not in message.attributes
    assert message.ignored == ["uid"]
