"""OBJECTID (RFC 8474): MAILBOXID, EMAILID and THREADID.

- MAILBOXID ``F`` + the folder's UIDVALIDITY in hex: pymta gives each
  folder of a user a UIDVALIDITY no other folder of that user had
  (``pymta-uidvalidity``), a rename keeps it, and a folder deleted and
  made again gets a new one, as RFC 8474 4 asks. Sent in SELECT/EXAMINE
  (``OK [MAILBOXID (F...)]``) and STATUS; not yet in CREATE's OK (which
  RFC 8474 4.1 says SHOULD carry it).
- EMAILID ``M`` + a hash of the message's header block and size: the same
  for a message and its copies (COPY, MOVE: the same bytes), different for
  different messages, never changing (a message is immutable). Two
  deliveries of exactly the same bytes share one, which RFC 8474 5.1
  allows for identical content.
- THREADID ``T`` + a hash of the first Message-ID of the message's
  References (else its first In-Reply-To id, else its own Message-ID):
  a reply and the message it answers share one. A message without any
  of these has a thread of its own (its EMAILID's hash).

FETCH items EMAILID and THREADID and SEARCH keys EMAILID and THREADID
read the cached header block (no message file). Pure functions over
bytes; untrusted input: the header block (anyone's mail).
"""

from __future__ import annotations

import hashlib

from pymta.imap.sortkeys import message_ids
from pymta.imap.structure import header_values
from pymta.mailstore.interface import MessageInfo

_DIGEST = 12  # bytes: 24 hex digits


def mailbox_id(uidvalidity: int) -> str:
    return f"F{uidvalidity:08x}"


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=_DIGEST).hexdigest()


def email_id(header: bytes, info: MessageInfo) -> str:
    return "M" + _hash(header + b"\0%d" % info.rfc822_size)


def thread_id(header: bytes, info: MessageInfo) -> str:
    values = header_values(header)
    for name in ("references", "in-reply-to", "message-id"):
        for value in values.get(name, ()):
            ids = message_ids(value)
            if ids:
                return "T" + _hash(ids[0].encode("utf-8", "surrogateescape"))
    return "T" + _hash(email_id(header, info).encode("ascii"))
