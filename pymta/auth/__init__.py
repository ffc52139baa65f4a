"""pymta.auth: who a client is, and which mailbox it gets (see docs/architecture.md).

- :mod:`~pymta.auth.passdb`: builds the checker, realm and portals from main.cf.
- :mod:`~pymta.auth.checker`: the passwd-file ICredentialsChecker (failure delays).
- :mod:`~pymta.auth.passwdfile`: Dovecot's passwd-file format, re-read on change.
- :mod:`~pymta.auth.schemes`, :mod:`~pymta.auth.shacrypt`: password schemes.
- :mod:`~pymta.auth.throttle`: login penalties before the check (Dovecot auth penalty).
- :mod:`~pymta.auth.penalty`: the penalty table (memory, or a file all processes share).
- :mod:`~pymta.auth.realm`, :mod:`~pymta.auth.interface`: avatars per protocol.
- :mod:`~pymta.auth.locate`: where a user's Maildir is.
- :mod:`~pymta.auth.credentials`, :mod:`~pymta.auth.errors`: the values at the seam.
"""
