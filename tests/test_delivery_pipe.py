"""pipe(8): master.cf pipe lines are checked at start (Debian's stock ones
start without warnings), argv expands Postfix's macros (per-recipient words
repeat), flags shape the message, and exit statuses map through sysexits."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from pymta.config import Config
from pymta.config.errors import ConfigError
from pymta.config.master_cf import check_master, parse_master_cf
from pymta.config.pipe_args import parse_pipe
from pymta.delivery.interface import DeliveryRecipient, DeliveryRequest, RecipientStatus
from pymta.delivery.pipe import PipeAgent, PipeContent
from pymta.privsep.interface import UnixUser
from pymta.privsep.memory import RecordingUserDelivery
from pymta.queue.model import Envelope, Recipient
from pymta.queue.reference import BytesContent, read_all
from pymta.service import BUILT_PARTS
from tests.test_config_master_cf import UNCHROOTED_MASTER_CF

VMAIL = UnixUser("vmail", 5000, 5000, "/var/vmail", "/bin/false")
CONTENT = b"Subject: x\n\n.dot line\nFrom here\nend\n"


def test_debian_stock_pipe_lines_start_without_warnings() -> None:
    """Every pipe service of Debian's master.cf (chroot column n) parses, and none is reported
    as not built or ignored."""
    services = parse_master_cf(UNCHROOTED_MASTER_CF)
    warnings = check_master(services, BUILT_PARTS)
    assert not [w for w in warnings if "(pipe)" in w]
    specs = {s.name: parse_pipe(s.args) for s in services if s.program == "pipe"}
    assert set(specs) == {"maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman"}
    assert specs["maildrop"].argv == ("/usr/bin/maildrop", "-d", "${recipient}")
    assert (specs["maildrop"].flags, specs["maildrop"].user) == ("DRXhu", "vmail")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flags=F", "argv=/bin/cat"], "missing user="),
        (["user=root", "argv=/bin/cat"], "must not be root"),
        (["user=nobody"], "missing argv="),
        (["flags=Z", "user=nobody", "argv=/bin/cat"], "unsupported flag(s) Z"),
        (["colour=blue", "user=nobody", "argv=/bin/cat"], "unknown attribute 'colour'"),
        (["size=big", "user=nobody", "argv=/bin/cat"], "expected a number"),
    ],
)
def test_bad_pipe_lines_stop_the_start(args: list[str], message: str) -> None:
    """A pipe line without user= or argv=, with user=root, an unknown flag or
    attribute is a ConfigError naming the line."""
    line = "bad unix - n n - - pipe " + " ".join(args) + "\n"
    services = parse_master_cf(line, "master.cf")
    with pytest.raises(ConfigError) as info:
        check_master(services, BUILT_PARTS)
    assert message in str(info.value)
    assert "line 1" in str(info.value)


def make_agent(args: str, users: dict[str, UnixUser] | None = None) -> tuple[PipeAgent, Any]:
    spec = parse_pipe(args.split())
    recorder = RecordingUserDelivery()
    clock = Clock()
    clock.advance(1_800_000_000)
    known = {"vmail": VMAIL} if users is None else users
    agent = PipeAgent(
        "filter",
        spec,
        Config.from_text("recipient_delimiter = +\nqueue_directory = /nonexistent\n"),
        clock,
        recorder,
        find_user=known.get,
    )
    return agent, recorder


def request(
    *addresses: str, sender: str = "Alice@Example.ORG", content: bytes = CONTENT
) -> DeliveryRequest:
    envelope = Envelope(sender, [Recipient(a, original=a) for a in addresses])
    envelope.attributes["client_address"] = "192.0.2.7"
    return DeliveryRequest(
        "QID1",
        envelope,
        BytesContent(content),
        "filter",
        "Next.Example",
        [DeliveryRecipient(i, a, a) for i, a in enumerate(addresses)],
    )


def run(agent: PipeAgent, req: DeliveryRequest) -> list[RecipientStatus]:
    result: list[list[RecipientStatus]] = []
    agent.deliver(req).addCallback(result.append)
    return result[0]


def test_argv_macros_and_per_recipient_words() -> None:
    """A word with ${recipient} (or user, extension, mailbox...) repeats once
    per recipient; sender, nexthop, size, queue_id, client_address expand
    once; h and u fold case; the command runs as user=."""
    agent, recorder = make_agent(
        "flags=hu user=vmail argv=/usr/bin/prog -f $sender -h ${nexthop} -s ${size} "
        "-q ${queue_id} -c ${client_address} -r${recipient} ${user}/${extension}"
    )
    [a, b] = run(agent, request("Bob+News@Mx.Example", "carol@mx.example"))
    assert (a.status, a.reason, b.status) == ("2.0.0", "relayed via filter service", "2.0.0")
    [call] = recorder.calls
    assert call.user == "vmail"
    assert call.target.split() == [
        "/usr/bin/prog", "-f", "Alice@Example.ORG", "-h", "next.example", "-s", str(len(CONTENT)),
        "-q", "QID1", "-c", "192.0.2.7", "-rbob+news@mx.example", "-rcarol@mx.example",
        "bob/news", "carol/",
    ]  # fmt: skip


def test_quoting_flag_and_null_sender() -> None:
    """q quotes local parts that are not dot-atoms (and leaves quoted ones);
    <> becomes null_sender."""
    agent, recorder = make_agent("flags=q user=vmail argv=prog $sender $recipient")
    run(agent, request("a b@x.example", '"c d"@x.example', sender=""))
    assert recorder.calls[0].target == 'prog MAILER-DAEMON "a b"@x.example "c d"@x.example'


def test_message_flags_and_eol() -> None:
    """F, R, D, O prepend their lines; . dot-stuffs; > quotes From; B adds
    a blank line; eol= ends each line."""
    agent, recorder = make_agent(r"flags=FRDO.>B eol=\r\n user=vmail argv=prog")
    run(agent, request("bob@mx.example"))
    data = recorder.stdins[0]
    assert data.startswith(b"From Alice@Example.ORG  Fri Jan 15 08:00:00 2027\r\n")
    assert data.endswith(
        b"Return-Path: <Alice@Example.ORG>\r\nDelivered-To: bob@mx.example\r\n"
        b"X-Original-To: bob@mx.example\r\nSubject: x\r\n\r\n..dot line\r\n>From here\r\n"
        b"end\r\n\r\n"
    )


def test_transforming_content_across_block_ends() -> None:
    """The line transformations hold across 64 KiB block ends."""
    body = (b"x" * 65535 + b"\n.From\n") * 3 + b"last"
    content = PipeContent(BytesContent(body), b"", ".", b"\r\n")
    assert read_all(content) == body.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n") + b"\r\n"


def test_status_mapping_and_refusals() -> None:
    """Exit 75 defers every recipient; X words success as delivered; an
    unknown user defers 4.3.5; size= bounces bigger messages 5.2.3."""
    agent, recorder = make_agent("flags=X user=vmail argv=prog")
    assert run(agent, request("a@x"))[0].reason == "delivered via filter service"
    recorder.exit_code = 75
    assert [s.status for s in run(agent, request("a@x", "b@x"))] == ["4.3.0", "4.3.0"]
    agent, _ = make_agent("user=ghost argv=prog")
    assert run(agent, request("a@x"))[0].status == "4.3.5"
    agent, _ = make_agent("size=10 user=vmail argv=prog")
    assert run(agent, request("a@x"))[0].status == "5.2.3"
