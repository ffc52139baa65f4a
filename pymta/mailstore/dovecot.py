"""Read Dovecot's (and Courier's) ``dovecot-uidlist``, to keep a migrated
Maildir's UIDs.

Mirrors the file Dovecot's Maildir storage keeps beside ``cur/``: a header
``3 V<uidvalidity> N<uidnext> G<guid> ...`` (version 3) or ``1 <uidvalidity>
<uidnext>`` (version 1, Courier's ``courierimapuiddb``), then one line per
message: ``<uid> [<extension fields>] :<file name>`` (version 3) or ``<uid>
<file name>`` (version 1). When a folder has no ``pymta-uidlist`` yet but
has this file, the Maildir store takes its UIDVALIDITY and UIDs, so clients
that synchronised with Dovecot need not download everything again.

Untrusted input: the whole file. Anything malformed makes the import fail
(None) rather than risk giving a UID to the wrong message. Reads only.
"""

from __future__ import annotations

import os

from pymta.mailstore.names import is_acceptable_filename, split_filename

UIDLIST_NAME = "dovecot-uidlist"
MAX_UID = 2**32 - 1


def read_dovecot_uidlist(directory: str) -> tuple[int, int, dict[str, int]] | None:
    """(uidvalidity, uidnext, {base name: uid}) from ``dovecot-uidlist`` in
    ``directory``, or None when there is none or it cannot be trusted."""
    try:
        with open(os.path.join(directory, UIDLIST_NAME), "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    header = lines[0].split(" ")
    try:
        if header[0] == "3":
            fields = {h[0]: h[1:] for h in header[1:] if h}
            uidvalidity, uidnext = int(fields["V"]), int(fields["N"])
        elif header[0] == "1":
            uidvalidity, uidnext = int(header[1]), int(header[2])
        else:
            return None
        uids: dict[str, int] = {}
        seen: set[int] = set()
        for line in lines[1:]:
            if not line:
                continue
            if header[0] == "3":
                head, sep, name = line.partition(" :")
                uid = int(head.split(" ", 1)[0])
                if not sep:
                    return None
            else:
                uid_text, _, name = line.partition(" ")
                uid = int(uid_text)
            base = split_filename(name)[0]
            if not 0 < uid < uidnext or uid in seen or not is_acceptable_filename(base):
                return None
            seen.add(uid)
            uids[base] = uid
    except (ValueError, KeyError, IndexError):
        return None
    if not 0 < uidvalidity <= MAX_UID or not 0 < uidnext <= MAX_UID:
        return None
    return uidvalidity, uidnext, uids
