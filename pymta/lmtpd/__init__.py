"""lmtpd: the LMTP server (RFC 2033) that delivers into pymta's mail store.

Mirrors Dovecot's lmtp(8): another MTA (Postfix with
``virtual_transport = lmtp:inet:HOST:PORT`` or ``lmtp:unix:PATH``, or
pymta's own lmtp client) hands over mail for the users of the same
passdb/userdb IMAP serves, and gets one final answer per recipient.
Modules: :mod:`~pymta.lmtpd.protocol` (the session),
:mod:`~pymta.lmtpd.users` (address to mailbox),
:mod:`~pymta.lmtpd.factory` (wiring from main.cf/master.cf).
"""
