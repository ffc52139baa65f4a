"""``pymta passwd``: hash a password, or set a user's password in a passwd-file.

Mirrors Dovecot's ``doveadm pw``::

    pymta passwd [-s SCHEME] [--stdin]                  print {SCHEME}hash
    pymta passwd [-s SCHEME] [--stdin] -u USER --update FILE
                                                        set USER's password in FILE

The password is asked twice on the terminal (getpass); when standard input
is not a terminal (``echo "$pw" | pymta passwd``), or with ``--stdin``, it
is read once from its first line instead (for scripts). SCHEME is
ARGON2ID (default), ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, PLAIN or
CLEAR. ``--update`` replaces the password field of USER's line and keeps the
other fields (uid, gid, home, extra fields) and every other line; a user not
in the file gets a new line ``USER:{SCHEME}hash``. Without ``--update`` FILE
the passwd-file of ``pymta_passdb`` is not touched.

Writes: only FILE, atomically (a temporary file in the same directory,
fsync, rename), keeping its permissions (0600 for a new file). Untrusted
input: the user name is checked for characters that would break the file
(``:``, white space, control characters). Errors are ``pymta: fatal: ...``
and exit status 1.
"""

from __future__ import annotations

import getopt
import getpass
import os
import sys
import tempfile
from collections.abc import Callable

from pymta.auth.schemes import CREATABLE_SCHEMES, DEFAULT_SCHEME, SchemeError, make_hash

PROG = "pymta"
USAGE = "usage: passwd [-s SCHEME] [--stdin] [-u USER --update FILE]"


class _Fatal(Exception):
    """Stops the command with ``pymta: fatal: message`` and exit status 1."""


def _read_password(from_stdin: bool, ask: Callable[[str], str] | None) -> str:
    if ask is None and not from_stdin and not sys.stdin.isatty():
        # A pipe or a file: getpass would take the first line as the password
        # and find nothing to confirm it with.
        from_stdin = True
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        ask = ask or getpass.getpass
        password = ask("Enter new password: ")
        if ask("Retype new password: ") != password:
            raise _Fatal("passwords don't match")
    if not password:
        raise _Fatal("empty password")
    return password


def _check_user(user: str) -> None:
    if not user or any(c == ":" or c.isspace() or not c.isprintable() for c in user):
        raise _Fatal(f"bad user name {user!r}: no ':', white space or control characters")


def update_passwd_file(path: str, user: str, password_field: str) -> bool:
    """Set user's password field in the passwd-file at path; True when the user was new."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        lines = []
        mode = 0o600
    key = user.lower()
    new = True
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#") or ":" not in line:
            continue
        name, _, rest = line.partition(":")
        if name.strip().lower() != key:
            continue
        _, sep, fields = rest.partition(":")
        lines[i] = f"{name}:{password_field}{sep}{fields}"
        new = False
        break
    if new:
        lines.append(f"{user}:{password_field}")
    text = "".join(line + "\n" for line in lines)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".passwd.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return new


def run(
    args: list[str],
    config_dir: str,
    ask: Callable[[str], str] | None = None,
) -> int:
    """``pymta passwd``; config_dir is accepted for symmetry with the other commands.

    ``ask`` asks for the password on a terminal (getpass when None and
    standard input is a terminal; tests pass their own)."""
    try:
        opts, rest = getopt.getopt(args, "s:u:", ["stdin", "update=", "scheme=", "user="])
    except getopt.GetoptError as e:
        print(f"{PROG}: fatal: {e}; {USAGE}", file=sys.stderr)
        return 1
    scheme = DEFAULT_SCHEME
    user: str | None = None
    update: str | None = None
    from_stdin = False
    for opt, value in opts:
        if opt in ("-s", "--scheme"):
            scheme = value.upper()
        elif opt in ("-u", "--user"):
            user = value
        elif opt == "--update":
            update = value
        elif opt == "--stdin":
            from_stdin = True
    if rest and user is None and len(rest) == 1:
        user = rest[0]  # `pymta passwd USER`, as the issue spells it
    elif rest:
        print(f"{PROG}: fatal: unexpected arguments; {USAGE}", file=sys.stderr)
        return 1
    try:
        if scheme not in CREATABLE_SCHEMES:
            raise _Fatal(f"unknown scheme {scheme}; one of {', '.join(CREATABLE_SCHEMES)}")
        if update is not None and user is None:
            raise _Fatal("--update needs -u USER")
        if user is not None:
            _check_user(user)
        password = _read_password(from_stdin, ask)
        try:
            stored = make_hash(password, scheme)
        except SchemeError as e:
            raise _Fatal(str(e)) from None
        if update is None:
            print(str(stored))
            return 0
        assert user is not None
        try:
            new = update_passwd_file(update, user, str(stored))
        except OSError as e:
            raise _Fatal(f"cannot update {update}: {e.strerror}") from None
        action = "added" if new else "updated"
        print(f"{PROG}: {action} {user} in {update}", file=sys.stderr)
        return 0
    except _Fatal as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(f"{PROG}: fatal: no password given", file=sys.stderr)
        return 1
