"""pymta.imap: the IMAP4rev1 server on the mail store (see docs/architecture.md).

- :mod:`~pymta.imap.factory`: IMAPServerFactory, one protocol per connection.
- :mod:`~pymta.imap.service`: make_imap_factory from the configuration.
- :mod:`~pymta.imap.protocol`: connection, states, login, STARTTLS, IDLE, dispatch.
- :mod:`~pymta.imap.session`: IMAPSession, what a command handler uses of
  the session (the command modules never import protocol.py).
- :mod:`~pymta.imap.stored`: a command answered when its call to the
  store's asynchronous API fires.
- :mod:`~pymta.imap.mailbox_commands`: SELECT, LIST, CREATE, STATUS, APPEND...
- :mod:`~pymta.imap.message_commands`: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE...
- :mod:`~pymta.imap.view`: a session's sequence numbers and pending updates.
- :mod:`~pymta.imap.parser`: the command reader (literals, limits) and tokens.
- :mod:`~pymta.imap.sequence`: sequence sets and UID sets.
- :mod:`~pymta.imap.fetch`: FETCH items and body sections;
  :mod:`~pymta.imap.transfer`: a part's transfer encoding undone.
- :mod:`~pymta.imap.structure`: ENVELOPE, BODYSTRUCTURE, header fields.
- :mod:`~pymta.imap.search`: SEARCH keys.
- :mod:`~pymta.imap.results`: ESEARCH RETURN options and PARTIAL windows.
- :mod:`~pymta.imap.sort`, :mod:`~pymta.imap.sortkeys`, :mod:`~pymta.imap.sortcache`:
  SORT and ESORT, what they compare, the keys kept between sorts.
- :mod:`~pymta.imap.thread`: THREAD=REFERENCES and THREAD=ORDEREDSUBJECT.
- :mod:`~pymta.imap.append`: APPEND with MULTIAPPEND and CATENATE.
- :mod:`~pymta.imap.compress`: COMPRESS=DEFLATE.
- :mod:`~pymta.imap.objectid`, :mod:`~pymta.imap.preview`: OBJECTID, PREVIEW.
- :mod:`~pymta.imap.metadata`: GETMETADATA and SETMETADATA.
- :mod:`~pymta.imap.quota_commands`, :mod:`~pymta.imap.quota`: QUOTA.
- :mod:`~pymta.imap.listing`: LIST/LSUB wildcards and attributes.
- :mod:`~pymta.imap.wire`: strings, literals, dates, mailbox names on the wire.
- :mod:`~pymta.imap.settings`, :mod:`~pymta.imap.log`: imapd_* parameters, log lines.
"""
