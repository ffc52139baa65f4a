"""cleanup's header address rewriting: canonical maps by address class,
masquerade_domains, local_header_rewrite_clients."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from pymta.cleanup.cleanup import Cleanup
from pymta.cleanup.header_addresses import _addresses, _parse_addresses, rewrite_value
from pymta.cleanup.masquerade import Masquerade
from pymta.config import Config, ConfigError
from pymta.queue.memory import MemoryQueueStore
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite import Resolver

BASE = """\
myhostname = mx.example.com
myorigin = example.com
mydestination = $myhostname, localhost
"""

MESSAGE = (
    b"From: Alice <alice@host.example.com>\n"
    b'To: "Smith, Bob" <bob@old.example>, carol (Carol) , team: dave@old.example;\n'
    b"Cc: root@host.example.com\n"
    b"Subject: alice@host.example.com stays\n\nalice@host.example.com in the body\n"
)


def run(
    extra: str, attrs: dict[str, str], sender: str = "alice@host.example.com"
) -> tuple[Envelope, bytes]:
    config = Config.from_text(BASE + extra)
    store = MemoryQueueStore()
    cleanup = Cleanup(config, store, Resolver(config), clock=task.Clock())
    box: list[object] = []
    envelope = Envelope(sender, [Recipient("bob@old.example")], attributes=attrs)
    cleanup.submit(envelope, MESSAGE).addBoth(box.append)
    assert isinstance(box[0], str), box
    return store.read(box[0], "incoming")


def header(message: bytes, name: bytes) -> bytes:
    for line in message.split(b"\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line
    raise AssertionError(name)


LOCAL = {"protocol": "pickup"}
REMOTE = {"client_address": "192.0.2.7", "protocol": "ESMTP"}


def test_canonical_and_masquerading_rewrite_headers_of_local_mail() -> None:
    """canonical_maps maps header addresses (display names, comments and
    groups kept), masquerade_domains hides the host, root is an exception,
    unqualified addresses get $myorigin; Subject and body are untouched."""
    envelope, message = run(
        "canonical_maps = inline:{ bob@old.example=bob@new.example, "
        "dave@old.example=dave@new.example }\n"
        "masquerade_domains = example.com\nmasquerade_exceptions = root\n",
        LOCAL,
    )
    assert header(message, b"From") == b"From: Alice <alice@example.com>"
    assert header(message, b"To") == (
        b'To: "Smith, Bob" <bob@new.example>, carol@example.com (Carol) , team: dave@new.example;'
    )
    assert header(message, b"Cc") == b"Cc: root@host.example.com"
    assert b"Subject: alice@host.example.com stays" in message
    assert message.endswith(b"alice@host.example.com in the body\n")
    assert envelope.sender == "alice@example.com"
    assert envelope.recipients[0].address == "bob@new.example"


def test_mail_from_other_clients_keeps_its_headers() -> None:
    """Under the default local_header_rewrite_clients a remote client's
    headers stay as sent (the envelope is still rewritten)."""
    envelope, message = run("canonical_maps = inline:{ bob@old.example=bob@new.example }\n", REMOTE)
    assert b"<bob@old.example>" in header(message, b"To")
    assert envelope.recipients[0].address == "bob@new.example"
    _, message = run(
        "canonical_maps = inline:{ bob@old.example=bob@new.example }\n"
        "local_header_rewrite_clients = static:all\n",
        REMOTE,
    )
    assert b"<bob@new.example>" in header(message, b"To")


def test_classes_choose_envelope_or_header() -> None:
    """recipient_canonical_classes = envelope_recipient leaves To: alone;
    sender_canonical_classes = header_sender leaves the envelope sender."""
    envelope, message = run(
        "recipient_canonical_maps = inline:{ bob@old.example=bob@new.example }\n"
        "recipient_canonical_classes = envelope_recipient\n"
        "sender_canonical_maps = inline:{ alice@host.example.com=a@example.net }\n"
        "sender_canonical_classes = header_sender\n",
        LOCAL,
    )
    assert envelope.recipients[0].address == "bob@new.example"
    assert b"<bob@old.example>" in header(message, b"To")
    assert envelope.sender == "alice@host.example.com"
    assert header(message, b"From") == b"From: Alice <a@example.net>"


def test_masquerade_domain_search_order() -> None:
    """The first listed parent decides; !sub excludes; the domain itself
    stops the search."""
    m = Masquerade(["!sub.example.com", "example.com"], ["root"], frozenset())
    assert m.apply("a@host.example.com") == "a@example.com"
    assert m.apply("a@x.sub.example.com") == "a@x.sub.example.com"
    assert m.apply("a@example.com") == "a@example.com"
    assert m.apply("root@host.example.com") == "root@host.example.com"
    assert m.apply("a@example.org") == "a@example.org"


def test_unparsable_header_values_are_left_alone() -> None:
    """An unbalanced quote or bracket: the header is not touched."""
    for value in (' "Bob <bob@x>', " <bob@x", " bob@x>", " (bob@x"):
        assert rewrite_value(value, lambda a: "CHANGED") == value


def test_bad_class_or_client_rule_stops_the_start() -> None:
    """An unknown address class or client rule is a configuration error."""
    with pytest.raises(ConfigError, match="masquerade_classes"):
        run("masquerade_domains = example.com\nmasquerade_classes = body\n", LOCAL)
    with pytest.raises(ConfigError, match="local_header_rewrite_clients"):
        run("local_header_rewrite_clients = permit_tls_clientcerts\n", LOCAL)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=' \t\n<>()",;:\\@[].ab', max_size=24))
def test_the_plain_address_shortcut_finds_what_the_parser_finds(value: str) -> None:
    """A header value that is one plain address (``<user@domain>`` or
    ``user@domain``) takes a shortcut past the parser; for every value, the
    spans found are the parser's."""
    assert _addresses(value) == _parse_addresses(value)


@pytest.mark.parametrize(
    "value",
    [" <sender@bench.test>", " a@b ", "a@b", " <a@b>\t", " <a.b+c@d.e>", " <a@b", " a@b>"],
)
def test_the_plain_address_shortcut_on_usual_values(value: str) -> None:
    """The usual From/To values: the shortcut's spans are the parser's."""
    assert _addresses(value) == _parse_addresses(value)
