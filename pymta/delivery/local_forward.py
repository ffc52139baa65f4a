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

import os
import stat
from dataclasses import dataclass

from pymta.config.expand import expand
from pymta.privsep.interface import UnixUser

FORWARD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ForwardFile:
    """What forward_path found: the file's path and text, or warnings."""

    path: str | None
    text: str
    warnings: tuple[str, ...] = ()


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
    """The first of paths that exists and passes Postfix's checks."""
    warnings: list[str] = []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
        except OSError as e:
            warnings.append(f"cannot open {path}: {e.strerror}")
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                warnings.append(f"file {path} is not a regular file; ignored")
                continue
            if info.st_uid != user.uid:
                warnings.append(f"file {path} has bad owner uid {info.st_uid}; ignored")
                continue
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                warnings.append(f"file {path} is group or world writable; ignored")
                continue
            data = os.read(fd, FORWARD_LIMIT)
        finally:
            os.close(fd)
        return ForwardFile(path, data.decode("utf-8", "replace"), tuple(warnings))
    return ForwardFile(None, "", tuple(warnings))
