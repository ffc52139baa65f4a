"""The README's embedding example runs: pymta inside another Twisted
application, receiving mail from Twisted's own SMTP client and delivering it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.mail.smtp import sendmail

from pymta.maillog import publisher
from tests.harness import DEFAULT_MAIN_CF, DEFAULT_MASTER_CF, REPO


def _readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(
        r"<!-- embedding-example -->\s*```python\n(.*?)```\s*<!-- /embedding-example -->",
        readme,
        re.S,
    )
    assert block, "README.md lost its embedding example"
    return block.group(1)


def _config_dir(root: Path) -> Path:
    etc = root / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(DEFAULT_MAIN_CF.format(root=root))
    (etc / "master.cf").write_text(DEFAULT_MASTER_CF)
    (etc / "vmailbox").write_text("alice@example.test example.test/alice/\n")
    (etc / "aliases").write_text("postmaster: alice@example.test\n")
    (etc / "virtual").write_text("")
    return etc


@pytest_twisted.inlineCallbacks
def test_readme_embedding_example_delivers_mail(tmp_path: Path) -> Any:
    """The example, pointed at a test configuration, builds a service that
    an application starts; mail sent to it with twisted.mail.smtp lands in
    the Maildir, and the service stops cleanly."""
    etc = _config_dir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(_readme_example().replace('"/etc/pymta"', repr(str(etc))), namespace)
    application = namespace["application"]
    mail = namespace["mail"]
    removed: Deferred[None] = Deferred()

    def observer(event: dict[str, Any]) -> None:
        if event.get("text", "").endswith(": removed") and not removed.called:
            removed.callback(None)

    publisher.addObserver(observer)
    service = IService(application)
    service.startService()
    try:
        [listener] = mail.ports.values()
        yield sendmail(
            "127.0.0.1",
            "app@example.org",
            ["alice@example.test"],
            b"Subject: embedded\r\n\r\nfrom inside an application\r\n",
            port=listener.port,
            requireTransportSecurity=False,
        )
        yield removed
    finally:
        publisher.removeObserver(observer)
        yield service.stopService()
    [delivered] = list((tmp_path / "mail" / "example.test" / "alice" / "new").iterdir())
    assert b"Subject: embedded" in delivered.read_bytes()
