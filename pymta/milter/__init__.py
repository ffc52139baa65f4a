"""pymta.milter: the Sendmail/Postfix milter client (protocol version 6).

Mirrors Postfix's milter8.c and cleanup_milter.c (see docs/architecture.md):

- ``pymta.milter.wire``: packets, commands, the reply decoder;
- ``pymta.milter.protocol``: one connection, one command at a time, time limits;
- ``pymta.milter.session``: one milter's events and its default action;
- ``pymta.milter.chain``: the milters of a session, asked in order;
- ``pymta.milter.edits``: end-of-message modifications applied to a message;
- ``pymta.milter.config``: the parameters and the connections they name.
"""
