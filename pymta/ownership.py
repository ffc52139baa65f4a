"""Give what pymta writes to the user twistd switches to (``twistd -u/-g``).

Mirrors what Postfix's ``postfix set-permissions`` and its start script do
for ``mail_owner``: started as root, ``twistd -u pymta -g pymta … pymta``
binds the ports as root and then runs everything as ``pymta``. Whatever is
created before that switch (the queue directories made while the services
are built, a self-signed certificate, the parent directory of twistd's
``--pidfile`` and ``--logfile``) would belong to root, and the unprivileged
process could neither write its mail log nor deliver nor remove its pid
file. So, while still root:

- :func:`prepare_twistd_files`, before twistd writes them: the missing
  parent directories of ``--pidfile`` and ``--logfile`` are created, owned
  by the user. twistd removes its pid file after the switch, so the pid
  file's directory must let the user remove it: otherwise the start stops
  with one line saying so and where to put it instead.
- :func:`give_state_to`, after the services are built: ``queue_directory``
  and ``data_directory`` with everything in them, ``virtual_mailbox_base``
  itself and ``maillog_file`` (created when missing) are given to the user
  and group. Only entries not already theirs are changed; symbolic links
  are not followed.
- :func:`check_readable`: the passwd-file of ``pymta_passdb``, which the
  servers re-read after the switch, must be readable by the user (a
  0600 root file would make every login a temporary failure): otherwise
  the start stops with one line giving the chgrp/chmod that fixes it.

Untrusted input: none (paths come from main.cf and twistd's command line,
written by the administrator). Writes: directory entries' ownership, the
directories and the empty mail log it creates. Logs: nothing.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymta.config.config import Config
from pymta.config.errors import ConfigError


@dataclass(frozen=True)
class RunAs:
    """The user and group twistd switches to after binding the ports."""

    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)


def twistd_run_as(
    twistd_options: Mapping[str, Any] | None, euid: int | None = None
) -> RunAs | None:
    """The identity twistd will switch to, when this process is root and
    twistd's ``-u`` names another user; else None (nothing to hand over).

    ``twistd_options`` is twistd's ServerOptions (the ``parent`` of the
    plugin's options), whose ``uid``/``gid`` are numbers once parsed. As in
    twistd, a ``-u`` without ``-g`` means the user's primary group.
    """
    if twistd_options is None:
        return None
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    uid = twistd_options.get("uid")
    if uid is None or uid == 0:
        return None
    gid = twistd_options.get("gid")
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return RunAs(int(uid), int(gid))


def _chown(path: str, run_as: RunAs, st: os.stat_result | None = None) -> None:
    if st is None:
        st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
        os.lchown(path, run_as.uid, run_as.gid)


def make_dirs(path: str | os.PathLike[str], run_as: RunAs, mode: int = 0o755) -> None:
    """``mkdir -p`` whose newly made directories belong to run_as."""
    missing: list[Path] = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=mode, exist_ok=True)
        _chown(str(directory), run_as)


def may_remove_entries(directory: str | os.PathLike[str], run_as: RunAs) -> bool:
    """Whether run_as may remove a root-owned file from directory
    (write and search permission; not a sticky directory it does not own)."""
    st = os.stat(directory)
    if st.st_uid == run_as.uid:
        return bool(st.st_mode & stat.S_IWUSR and st.st_mode & stat.S_IXUSR)
    if st.st_mode & stat.S_ISVTX:
        return False  # /tmp: only the owner of the file (root) may remove it
    try:
        groups = set(os.getgrouplist(run_as.user, run_as.gid))
    except (KeyError, OSError):
        groups = {run_as.gid}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IWOTH and st.st_mode & stat.S_IXOTH)


def _may(st: os.stat_result, run_as: RunAs, groups: set[int], bits: tuple[int, int, int]) -> bool:
    user_bit, group_bit, other_bit = bits
    if st.st_uid == run_as.uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid in groups:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)


def may_read(path: str | os.PathLike[str], run_as: RunAs) -> bool:
    """Whether run_as may read the file at path (its directories searchable)."""
    try:
        groups = set(os.getgrouplist(run_as.user, run_as.gid))
    except (KeyError, OSError):
        groups = {run_as.gid}
    target = Path(path).absolute()
    search = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    for directory in reversed(target.parents):
        if not _may(os.stat(directory), run_as, groups, search):
            return False
    return _may(os.stat(target), run_as, groups, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))


def check_readable(config: Config, services: list[str], run_as: RunAs) -> None:
    """Raise ConfigError (one line) when the passwd-file of ``pymta_passdb``,
    which pop3d and imapd read again after the switch whenever it changes,
    is not readable by run_as: every login would fail as a temporary error."""
    if not {"pop3d", "imapd"} & set(services):
        return
    from pymta.auth.passdb import passwd_path

    path = passwd_path(config)
    try:
        readable = may_read(path, run_as)
    except FileNotFoundError:
        return  # a missing file is the checker's to report, at each login
    if not readable:
        raise ConfigError(
            f"{path} is not readable by user {run_as.user}, which pop3d and imapd run as: "
            f"chgrp {grp_name(run_as.gid)} {path} && chmod 0640 {path}",
            parameter="pymta_passdb",
        )


def grp_name(gid: int) -> str:
    """The name of group gid (its number when it has none)."""
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def prepare_twistd_files(pidfile: str | None, logfile: str | None, run_as: RunAs) -> None:
    """Make the directories of twistd's pid and log files usable by run_as.

    Raises ConfigError (one line) when the pid file's directory exists but
    run_as could not remove the pid file from it at stop.
    """
    if logfile and logfile != "-":
        make_dirs(Path(logfile).absolute().parent, run_as)
    if not pidfile:
        return
    directory = Path(pidfile).absolute().parent
    if not directory.exists():
        make_dirs(directory, run_as)
        return
    if not may_remove_entries(directory, run_as):
        raise ConfigError(
            f"user {run_as.user} could not remove its pid file from {directory} "
            f"(twistd removes it after switching to -u {run_as.user}): use a directory "
            f"it owns, e.g. --pidfile {directory / 'pymta' / Path(pidfile).name} "
            "(or --pidfile= for none)",
            parameter="--pidfile",
        )


#: Directories never handed over whole, whatever main.cf says: a
#: queue_directory or data_directory must be pymta's own.
_SYSTEM_DIRECTORIES = {"/", "/etc", "/home", "/root", "/run", "/tmp", "/usr", "/var"} | {
    f"/var/{name}" for name in ("lib", "spool", "log", "mail", "run", "tmp")
}


def _give_tree(top: str, run_as: RunAs) -> None:
    if os.path.realpath(top) in _SYSTEM_DIRECTORIES:
        raise ConfigError(
            f"{top} is a system directory: pymta will not give it to {run_as.user}; "
            "use a directory of its own"
        )
    _chown(top, run_as)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                _chown(path, run_as)
            except FileNotFoundError:
                pass  # removed meanwhile


def give_state_to(config: Config, run_as: RunAs) -> None:
    """Create and hand over the state directories and the mail log
    (see the module docstring); ``config`` has absolute paths."""
    for name in ("queue_directory", "data_directory"):
        directory = config.get(name).strip()
        if directory:
            make_dirs(directory, run_as)
            try:
                _give_tree(directory, run_as)
            except ConfigError as e:
                raise ConfigError(e.message, parameter=name) from None
    base = config.get("virtual_mailbox_base").strip()
    if base:
        if os.path.realpath(base) in _SYSTEM_DIRECTORIES:
            raise ConfigError(
                f"{base} is a system directory: pymta will not give it to {run_as.user}; "
                "use a directory of its own (e.g. /var/mail/vhosts)",
                parameter="virtual_mailbox_base",
            )
        # Only the top: a mail store may hold millions of files, and
        # everything below it is created by deliveries, as the user.
        make_dirs(base, run_as)
        _chown(base, run_as)
    maillog = config.get("maillog_file").strip()
    if maillog and not maillog.startswith("/dev/"):
        make_dirs(Path(maillog).parent, run_as)
        fd = os.open(maillog, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
                os.fchown(fd, run_as.uid, run_as.gid)
        finally:
            os.close(fd)
