"""pymta.pop3: the POP3 server on the mail store (see docs/architecture.md).

- :mod:`~pymta.pop3.factory`: POP3ServerFactory, one protocol per connection.
- :mod:`~pymta.pop3.protocol`: the RFC 1939/2449/5034/2595 state machine.
- :mod:`~pymta.pop3.maildrop`: one session's numbered view of INBOX.
- :mod:`~pymta.pop3.wire`: CRLF and dot-stuffing of whole messages.
- :mod:`~pymta.pop3.settings`: the pop3d_* parameters.
- :mod:`~pymta.pop3.log`: Dovecot-style login/logout lines.
"""
