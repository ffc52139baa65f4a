"""The ``pymta_server`` pytest fixture: a real mail server per test.

pymta-only; registered as a pytest plugin by pymta's package entry point
(``pytest11``), so any project that installs pymta gets the fixture::

    def test_signup_mail(pymta_server):
        my_app.send_welcome(smtp_port=pymta_server.smtp_port, to="alice@example.test")
        (message,) = pymta_server.wait_for_delivery("alice@example.test")
        assert message["Subject"] == "Welcome"

The server (:class:`pymta.testing.MailServer`) runs in the test's
``tmp_path`` with alice@ and bob@example.test (passwords ``alice-pw`` and
``bob-pw``) unless the test says otherwise with a marker::

    @pytest.mark.pymta(users={"me@corp.test": "pw"}, aliases={"all@corp.test": ["me@corp.test"]},
                       main_cf="message_size_limit = 1000\\n")

It is stopped after the test. Writes: tmp_path. Starts: one twistd.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pymta.testing.mailserver import MailServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pymta(users=..., aliases=..., main_cf=...): configure pymta_server"
    )


@pytest.fixture
def pymta_server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[MailServer]:
    """A started pymta MailServer for this test (see module doc)."""
    marker = request.node.get_closest_marker("pymta")
    options = dict(marker.kwargs) if marker is not None else {}
    server = MailServer(tmp_path / "pymta", **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
