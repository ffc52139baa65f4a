"""local_forward: find and read a user's ``.forward`` file, as local(8) does.

Mirrors Postfix's dotforward.c: ``forward_path`` (default
``$home/.forward${recipient_delimiter}${extension}, $home/.forward``) is
expanded per recipient with local(8)'s names (``$user``, ``$home``,
``$shell``, ``$local``, ``$extension``, ``$recipient``, ``$domain``,
``$recipient_delimiter``, and ``${name?value}``/``${name:value}``); the
first file that exists is used. It must be a regular file owned by the
user and not writable by group or others; otherwise it is ignored with a
warning, as Postfix does. The file is opened without following a final
symlink and checked on the open descriptor, so that a link cannot make
pymta read (and bounce back) a file the user may not read.

Untrusted input: the file's content (addresses, ``/file``, ``|command``,
``:include:``: the caller runs files and commands as the user). Writes
nothing. Runs in a thread (:func:`read_forward` blocks on the disk).
"""

from __future__ import annotations

from pymta.config.expand import expand
from pymta.privsep.child import read_forward as child_read_forward
from pymta.privsep.interface import ForwardFile, UnixUser

__all__ = ["ForwardFile", "forward_paths", "read_forward"]


def forward_paths(
    template: str, user: UnixUser, local: str, extension: str, domain: str, delimiter: str
) -> list[str]:
    """forward_path expanded for one recipient (empty items dropped)."""
    names = {
        "user": user.name,
        "home": user.home,
        "shell": user.shell,
        "local": local,
        "extension": extension,
        "recipient": f"{local}@{domain}" if domain else local,
        "domain": domain,
        "recipient_delimiter": delimiter,
    }
    paths = []
    for item in template.replace(",", " ").split():
        path = expand(item, names.get)
        if path and path not in paths:
            paths.append(path)
    return paths


def read_forward(paths: list[str], user: UnixUser) -> ForwardFile:
    """The first of paths that exists and passes Postfix's checks (one copy
    of them, in :func:`pymta.privsep.child.read_forward`, which the root
    helper also runs as the user)."""
    path, text, warnings = child_read_forward(paths, user.uid)
    return ForwardFile(path, text, tuple(warnings))
