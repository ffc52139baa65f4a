"""authorized_submit_users: who may hand mail to sendmail and pickup.

Mirrors Postfix's authorized_submit_users (postdrop.c, match_list with
string matching): the submitting process's real uid is looked up in the
password file and its login name (``unknown`` when the uid has none) is
matched against the list, left to right; the first match decides.
Entries: a user name (case-insensitive), ``!pattern`` (a match denies),
``/file/name`` (its contents are read as more entries), ``type:table``
(matches when the name is a key of the table; the value is ignored;
``static:anyone``, Postfix's default, matches everyone). An empty list
lets nobody submit. A table that cannot be read denies (Postfix defers:
here sendmail exits EX_TEMPFAIL and pickup leaves the file for later).

sendmail checks it to fail early; pickup checks it again with the uid the
kernel reports as the file's owner, and that is the check that counts.
Untrusted input: none (the names come from the password database and
main.cf). Reads the files named in the list. Writes and logs nothing.
"""

from __future__ import annotations

import pwd

TYPE_CHECKING = False  # not typing's: sendmail starts faster without typing
if TYPE_CHECKING:
    from collections.abc import Callable

    TableOpener = Callable[[str], object]
else:
    TableOpener = object


class AuthorizationUnavailable(Exception):
    """A file or table of the list could not be read (try again later)."""


def login_name(uid: int) -> str:
    """The password-file name of uid, or ``unknown`` (Postfix's word)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "unknown"


def split_entries(value: str) -> list[str]:
    """Entries of a list parameter or file (comma and/or white space; # comments in files)."""
    return value.replace(",", " ").split()


def _file_entries(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0] for line in f]
    except OSError as e:
        raise AuthorizationUnavailable(f"{path}: {e.strerror}") from None
    return split_entries(" ".join(lines))


def _table_match(spec: str, name: str, open_table: TableOpener | None) -> bool:
    kind = spec.partition(":")[0]
    if kind == "static":
        return True  # a static table answers every key
    if open_table is None:
        from pymta.tables import open_table as default_open

        table: object = default_open(spec)
    else:
        table = open_table(spec)
    try:
        return table.lookup(name) is not None  # type: ignore[attr-defined]
    except Exception as e:  # TableError and kin: not found is not failed
        raise AuthorizationUnavailable(f"{spec}: {e}") from None


def is_authorized(
    name: str, entries: list[str], open_table: TableOpener | None = None, _depth: int = 0
) -> bool:
    """Whether the login name may submit; AuthorizationUnavailable when undecidable."""
    if _depth > 10:
        raise AuthorizationUnavailable("authorized_submit_users: files include each other")
    folded = name.lower()
    for entry in entries:
        negate = entry.startswith("!")
        pattern = entry[1:] if negate else entry
        if pattern.startswith("/"):
            inner = _file_entries(pattern)
            decided = _first_match(folded, inner, open_table, _depth + 1)
            if decided is None:
                continue
            return decided != negate
        if ":" in pattern:
            matched = _table_match(pattern, name, open_table)
        else:
            matched = pattern.lower() == folded
        if matched:
            return not negate
    return False


def _first_match(
    name: str, entries: list[str], open_table: TableOpener | None, depth: int
) -> bool | None:
    """Like is_authorized, but None when nothing in entries matched."""
    if is_authorized(name, entries, open_table, depth):
        return True
    # No allowing match: either a "!" entry matched (deny) or none did; a
    # trailing catch-all tells the two apart.
    if is_authorized(name, [*entries, "static:anyone"], open_table, depth):
        return None
    return False
