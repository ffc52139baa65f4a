"""permissions: the queue's ownerships and modes, checked and set.

Mirrors ``postfix check`` (postfix-script's queue checks) and ``postfix
set-permissions``, for pymta's queue: the queue directories
(``incoming``, ``active``, ``deferred``, ``hold``, ``corrupt``, ``defer``)
and the files in them belong to the mail owner with mode 0700 (files
0600 at most), so that only the server reads queued mail; ``maildrop`` is
mode 1733 (anyone may drop a file, nobody may list it, the sticky bit
keeps users from each other's files; its files belong to their
submitters, whom pickup identifies by that owner); ``queue_directory``
itself is writable by no one but its owner. The mail owner is the owner of
``queue_directory`` (twistd's ``-u`` user once pymta started with it, see
pymta.ownership) or, when root owns that (Postfix's layout), of its
``incoming`` directory; :func:`set_permissions` is given the user.

Untrusted input: none (paths from main.cf). Symbolic links are reported
and never followed. :func:`set_permissions` writes ownerships and modes;
nothing here logs (the command prints what it found or changed).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from pymta.queue.interface import QUEUE_NAMES
from pymta.queue.store import DEFER_DIR
from pymta.sendmail.postdrop import MAILDROP_MODE

QUEUE_DIRECTORIES = (*QUEUE_NAMES, DEFER_DIR)
DIRECTORY_MODE = 0o700
#: Reports per directory before "and N more".
REPORT_LIMIT = 10


def _entries(directory: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    yield entry.path, entry.stat(follow_symlinks=False)
                except OSError:
                    continue
    except OSError:
        return


def mail_owner(queue_directory: str, top: os.stat_result | None = None) -> int:
    """The queue's owner: queue_directory's, or when root owns it (Postfix's
    layout: root's directory, the mail owner's subdirectories) that of the
    first queue subdirectory found."""
    info = top or os.lstat(queue_directory)
    if info.st_uid != 0:
        return info.st_uid
    for name in ("incoming", "active", "deferred"):
        try:
            return os.lstat(os.path.join(queue_directory, name)).st_uid
        except OSError:
            continue
    return 0


def check_permissions(queue_directory: str, owner: int | None = None) -> list[str]:
    """What ``postfix check`` would say about the queue (empty: all well)."""
    try:
        top = os.lstat(queue_directory)
    except FileNotFoundError:
        return []  # made at the first start, with the right modes
    except OSError as e:
        return [f"{queue_directory}: {e.strerror}"]
    uid = owner if owner is not None else mail_owner(queue_directory, top)
    problems: list[str] = []
    if top.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(
            f"{queue_directory}: mode {stat.S_IMODE(top.st_mode):04o} lets others write it"
        )
    for name in QUEUE_DIRECTORIES:
        path = os.path.join(queue_directory, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            problems.append(f"{path}: not a directory")
            continue
        if info.st_uid != uid:
            problems.append(f"{path}: owned by uid {info.st_uid}, not the mail owner (uid {uid})")
        if stat.S_IMODE(info.st_mode) != DIRECTORY_MODE:
            problems.append(
                f"{path}: mode {stat.S_IMODE(info.st_mode):04o}, expected {DIRECTORY_MODE:04o}"
            )
        wrong = 0
        for entry, entry_info in _entries(path):
            bad = (
                stat.S_ISLNK(entry_info.st_mode)
                or entry_info.st_uid != uid
                or entry_info.st_mode & 0o077
            )
            if bad:
                wrong += 1
                if wrong <= REPORT_LIMIT:
                    problems.append(
                        f"{entry}: owner uid {entry_info.st_uid}, mode "
                        f"{stat.S_IMODE(entry_info.st_mode):04o}: queue files belong to "
                        f"the mail owner (uid {uid}), mode 0600"
                    )
        if wrong > REPORT_LIMIT:
            problems.append(f"{path}: and {wrong - REPORT_LIMIT} more such files")
    maildrop = os.path.join(queue_directory, "maildrop")
    try:
        info = os.lstat(maildrop)
    except FileNotFoundError:
        return problems
    if not stat.S_ISDIR(info.st_mode):
        problems.append(f"{maildrop}: not a directory")
    else:
        if stat.S_IMODE(info.st_mode) != MAILDROP_MODE:
            problems.append(
                f"{maildrop}: mode {stat.S_IMODE(info.st_mode):04o}, expected {MAILDROP_MODE:04o}"
            )
        if info.st_uid != uid:
            problems.append(
                f"{maildrop}: owned by uid {info.st_uid}, not the mail owner (uid {uid})"
            )
    return problems


def set_permissions(queue_directory: str, uid: int, gid: int) -> list[str]:
    """Give the queue to uid:gid with the modes above; what was changed."""
    changed: list[str] = []

    def fix(path: str, info: os.stat_result, mode: int) -> None:
        if info.st_uid != uid or info.st_gid != gid:
            os.chown(path, uid, gid, follow_symlinks=False)
            changed.append(f"{path}: owner set to {uid}:{gid}")
        if stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)
            changed.append(f"{path}: mode set to {mode:04o}")

    top = os.lstat(queue_directory)
    if top.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.chmod(queue_directory, stat.S_IMODE(top.st_mode) & ~0o022)
        changed.append(f"{queue_directory}: write permission for others removed")
    if top.st_uid != uid or top.st_gid != gid:
        os.chown(queue_directory, uid, gid, follow_symlinks=False)
        changed.append(f"{queue_directory}: owner set to {uid}:{gid}")
    for name in QUEUE_DIRECTORIES:
        path = os.path.join(queue_directory, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue  # reported by check; never replaced here
        fix(path, info, DIRECTORY_MODE)
        for entry, entry_info in _entries(path):
            if stat.S_ISREG(entry_info.st_mode):
                fix(entry, entry_info, stat.S_IMODE(entry_info.st_mode) & 0o600 or 0o600)
            elif stat.S_ISDIR(entry_info.st_mode):
                fix(entry, entry_info, DIRECTORY_MODE)
    maildrop = os.path.join(queue_directory, "maildrop")
    try:
        info = os.lstat(maildrop)
    except FileNotFoundError:
        return changed
    if stat.S_ISDIR(info.st_mode):
        # Its files stay their submitters': pickup reads who sent them from that.
        fix(maildrop, info, MAILDROP_MODE)
    return changed
