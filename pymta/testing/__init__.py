"""A real pymta for other people's tests (and pymta's own).

- :class:`MailServer`: pymta in a subprocess on free loopback ports, users
  and aliases from code, ``send()``, ``wait_for_delivery()``,
  ``mailbox(address).messages()``, ``events()``, ``stop()``.
- :class:`EmbeddedMailServer`: the same inside the test's own Twisted
  reactor (trial, pytest-twisted); waits are Deferreds.
- the ``pymta_server`` pytest fixture (:mod:`pymta.testing.pytest_plugin`).
- :class:`PymtaProcess`: the low-level form with main.cf / master.cf text.

See the README's "Testing your code against pymta" section.
"""

from pymta.testing.embedded import EmbeddedMailServer
from pymta.testing.events import MailEvent
from pymta.testing.mailserver import MailServer
from pymta.testing.process import PymtaProcess
from pymta.testing.site import Mailbox

__all__ = ["EmbeddedMailServer", "MailEvent", "MailServer", "Mailbox", "PymtaProcess"]
