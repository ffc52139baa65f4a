"""pymta.bounce: Postfix's bounce(8) (see docs/architecture.md).

- :mod:`~pymta.bounce.bouncer`: non-delivery, delay and success notices through cleanup.
- :mod:`~pymta.bounce.dsn`: the RFC 3464 message.
"""
