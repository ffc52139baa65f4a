"""unix:passwd.byname and unix:group.byname: the system's users and groups.

Mirrors Postfix's dict_unix: a key is a user (or group) name, the value is
its passwd(5) (or group(5)) line. ``local_recipient_maps`` lists
``proxy:unix:passwd.byname`` by default so that mail for a Unix user is
accepted at RCPT; the key is the local part, without an address extension
(the caller strips it). Lookups go through Python's pwd and grp modules
(NSS). Untrusted input: the key. Writes nothing; logs nothing.
"""

from __future__ import annotations

import grp
import pwd

from zope.interface import implementer

from pymta.tables.interface import ILookupTable, TableError

MAPS = ("passwd.byname", "group.byname")


@implementer(ILookupTable)
class UnixTable:
    """``unix:passwd.byname`` or ``unix:group.byname``."""

    def __init__(self, spec: str, map_name: str) -> None:
        if map_name not in MAPS:
            raise TableError(f"{spec}: unknown unix map {map_name!r} (expected {', '.join(MAPS)})")
        self.name = spec
        self._map = map_name

    def lookup(self, key: str) -> str | None:
        # Unix names are case-sensitive, Postfix folds the key to lower case.
        key = key.lower()
        if not key or "\0" in key or "@" in key:
            return None
        try:
            if self._map == "passwd.byname":
                p = pwd.getpwnam(key)
                return ":".join(
                    (p.pw_name, "*", str(p.pw_uid), str(p.pw_gid), p.pw_gecos, p.pw_dir, p.pw_shell)
                )
            g = grp.getgrnam(key)
            return ":".join((g.gr_name, "*", str(g.gr_gid), ",".join(g.gr_mem)))
        except KeyError:
            return None
        except (UnicodeEncodeError, ValueError):
            return None
