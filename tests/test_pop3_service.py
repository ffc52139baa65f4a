"""make_pop3_factory: a pop3d factory wired from main.cf alone."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from pymta.auth.credentials import PasswordCredentials
from pymta.auth.interface import IMailAccount
from pymta.auth.locate import virtual_mailbox_lookup
from pymta.config.config import Config
from pymta.mailstore.memory import MemoryStore
from pymta.pop3.service import make_pop3_factory


def test_virtual_mailbox_maps_lookup_from_config() -> None:
    """virtual_mailbox_maps is searched in Postfix's order (user@domain, then @domain)."""
    config = Config.from_text(
        "virtual_mailbox_maps = inline:{ v@example.org=example.org/v/, @example.net=net/all/ }\n"
    )
    lookup = virtual_mailbox_lookup(config)
    assert lookup("v@example.org") == "example.org/v/"
    assert lookup("anyone@example.net") == "net/all/"
    assert lookup("w@example.org") is None
    assert virtual_mailbox_lookup(Config.from_text("")) is None


@pytest_twisted.inlineCallbacks
def test_factory_from_config_serves_virtual_mailbox(tmp_path: Path) -> Generator[Any, Any, None]:
    """The factory's portal finds a passwd-file user's mailbox through virtual_mailbox_maps."""
    (tmp_path / "passwd").write_text("v@example.org:{PLAIN}pw\n")
    config = Config.from_text(
        "virtual_mailbox_base = /vmail\n"
        "virtual_mailbox_maps = inline:{ v@example.org=example.org/v/ }\n"
        "pop3d_tls_security_level = none\n",
        config_directory=str(tmp_path),
    )
    store = MemoryStore(Clock())
    factory = make_pop3_factory(config, reactor, store=store)
    assert factory.tls is None
    assert factory.trusted_networks.contains("127.0.0.1")
    assert not factory.trusted_networks.contains("203.0.113.1")
    creds = PasswordCredentials("v@example.org", "pw")
    _, account, _ = yield factory.portal.login(creds, None, IMailAccount)
    assert account.mailbox is store.open_user("v@example.org", "/vmail/example.org/v")
