"""The mail realm and portals built from main.cf: avatars for POP3/IMAP and SMTP AUTH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from pymta.auth.credentials import PasswordCredentials
from pymta.auth.errors import MailboxUnavailable
from pymta.auth.interface import IMailAccount, ISubmitIdentity
from pymta.auth.passdb import checker_from_config, passwd_path, portal_from_config
from pymta.auth.realm import MailRealm
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.mailstore.asyncstore import IAsyncFolder, IAsyncUserMailbox
from pymta.mailstore.memory import MemoryStore


def sync(f: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f)


def outcome(d: defer.Deferred[Any]) -> Any:
    result: list[Any] = []
    d.addBoth(result.append)
    return result[0] if result else None


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "passwd").write_text(
        "u@example.org:{PLAIN}pw::::/mail/u::\nv@example.org:{PLAIN}pw\n"
    )
    return Config.from_text(
        "virtual_mailbox_base = /vmail\npymta_auth_failure_delay = 1s\n",
        config_directory=str(tmp_path),
    )


def test_default_passdb_is_config_directory_passwd(config: Config, tmp_path: Path) -> None:
    """pymta_passdb defaults to passwd-file:$config_directory/passwd."""
    assert passwd_path(config) == f"{tmp_path}/passwd"


def test_bad_passdb_type_is_config_error(config: Config) -> None:
    """A pymta_passdb of an unknown type is a ConfigError naming the parameter."""
    with pytest.raises(ConfigError) as e:
        passwd_path(config.with_overrides({"pymta_passdb": "sql:/etc/x"}))
    assert e.value.parameter == "pymta_passdb"


def test_pop3_avatar_is_mail_account_with_inbox(config: Config) -> None:
    """Asking for IMailAccount yields the user's mailbox, and the same
    folders through the store's asynchronous API (its INBOX is there)."""
    clock = Clock()
    store = MemoryStore(clock)
    checker = checker_from_config(config, clock, run_in_thread=sync)
    portal = portal_from_config(config, store, clock, checker=checker)
    iface, account, logout = outcome(
        portal.login(PasswordCredentials("U@example.org", "pw"), None, IMailAccount)
    )
    assert iface is IMailAccount
    verifyObject(IMailAccount, account)
    assert account.user == "u@example.org"
    assert IAsyncUserMailbox.providedBy(account.folders)
    inbox = outcome(account.folders.folder("INBOX"))
    assert IAsyncFolder.providedBy(inbox) and inbox.name.upper() == "INBOX"
    assert account.mailbox is store.open_user("u@example.org", "/mail/u")
    logout()


def test_virtual_mailbox_maps_location(config: Config) -> None:
    """Without passwd-file location, virtual_mailbox_maps under virtual_mailbox_base is used."""
    clock = Clock()
    store = MemoryStore(clock)
    lookup = {"v@example.org": "example.org/v/"}.get
    portal = portal_from_config(
        config, store, clock, lookup, checker_from_config(config, clock, run_in_thread=sync)
    )
    _, account, _ = outcome(
        portal.login(PasswordCredentials("v@example.org", "pw"), None, IMailAccount)
    )
    assert account.mailbox is store.open_user("v@example.org", "/vmail/example.org/v")


def test_no_location_is_mailbox_unavailable(config: Config) -> None:
    """A user with no mailbox anywhere gets MailboxUnavailable (permanent), not a crash."""
    clock = Clock()
    portal = portal_from_config(
        config,
        MemoryStore(clock),
        clock,
        None,
        checker_from_config(config, clock, run_in_thread=sync),
    )
    result = outcome(portal.login(PasswordCredentials("v@example.org", "pw"), None, IMailAccount))
    assert isinstance(result, Failure) and result.check(MailboxUnavailable)
    assert getattr(result.value, "permanent", False)


def test_submit_identity_needs_no_mailbox(config: Config) -> None:
    """SMTP AUTH asks for ISubmitIdentity, which works for users without a mailbox."""
    clock = Clock()
    portal = portal_from_config(
        config,
        MemoryStore(clock),
        clock,
        None,
        checker_from_config(config, clock, run_in_thread=sync),
    )
    iface, ident, _ = outcome(
        portal.login(PasswordCredentials("v@example.org", "pw"), None, ISubmitIdentity)
    )
    assert iface is ISubmitIdentity and ident.user == "v@example.org"


def test_failure_delay_from_config(config: Config) -> None:
    """pymta_auth_failure_delay sets the first delay after a failed login."""
    clock = Clock()
    checker = checker_from_config(config, clock, run_in_thread=sync)
    d = checker.requestAvatarId(PasswordCredentials("u@example.org", "bad", "192.0.2.1"))
    result: list[Any] = []
    d.addBoth(result.append)
    clock.advance(0.99)
    assert result == []
    clock.advance(0.01)
    assert result[0].check(UnauthorizedLogin)


def test_realm_refuses_unknown_interface() -> None:
    """A realm asked for an interface it does not serve raises NotImplementedError."""
    from zope.interface import Interface

    class IOther(Interface):
        pass

    realm = MailRealm(MemoryStore(Clock()), lambda user: None)
    with pytest.raises(NotImplementedError):
        realm.requestAvatar(b"u", None, IOther)
