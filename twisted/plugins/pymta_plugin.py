"""The ``twistd pymta`` plugin: see pymta.tap."""

from twisted.application.service import ServiceMaker

pymta = ServiceMaker(
    "pymta-mail-system",
    "pymta.tap",
    "A complete mail system: SMTP, queue, delivery, POP3 and IMAP, configured like Postfix",
    "pymta",
)
