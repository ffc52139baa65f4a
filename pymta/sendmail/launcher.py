"""``pymta install-sendmail``: write the sendmail launcher and its names.

Every message submitted with sendmail is one process, so its start-up is
its cost. A console script (``pymta-sendmail``) starts Python with the
site module, which reads every ``.pth`` file of site-packages and imports
what they name; on a Debian host that alone is a third of the run. The
launcher written here starts ``PYTHON -S`` (no site module) with pymta's
own directory on ``sys.path``, which is all a plain submission imports
(pymta.sendmail needs nothing outside the standard library). The modes
that need installed packages (``-bp``, ``-bi``, ``-q``, ``-bs``, a main.cf
that needs the full reader) load the site module first
(:func:`pymta.sendmail.command.full_environment`).

Files written, as Debian lays out Postfix's: ``SBIN/sendmail`` (the
launcher, mode 0755), ``BIN/mailq`` and ``BIN/newaliases`` (symbolic links
to it: invoked under those names, sendmail acts as them). A file that is
not a pymta launcher (Postfix's sendmail, say) is replaced only with
``--force``; so is a link that points elsewhere.

Usage: ``pymta install-sendmail [--sbin DIR] [--bin DIR] [--python PATH]
[--force]``. Writes the three files; logs nothing.
"""

from __future__ import annotations

import getopt
import os
import sys

import pymta

#: The line that marks a file as ours (so that it may be replaced).
MARKER = "# pymta sendmail launcher"

USAGE = "usage: pymta install-sendmail [--sbin DIR] [--bin DIR] [--python PATH] [--force]"


class InstallError(Exception):
    """A file could not be written, or is not ours to replace."""


def launcher_text(python: str, package_parent: str) -> str:
    """The launcher script for this interpreter and pymta's location."""
    return (
        f"#!{python} -S\n"
        f"{MARKER} (written by 'pymta install-sendmail'): Python without\n"
        "# the site module starts faster; pymta is found at the path below.\n"
        "import sys\n"
        f"sys.path.insert(0, {package_parent!r})\n"
        "from pymta.sendmail.command import main\n"
        "sys.exit(main())\n"
    )


def _is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def _replaceable(path: str, target: str | None, force: bool) -> None:
    """InstallError unless path is absent, ours, already right, or force."""
    if not os.path.lexists(path) or force:
        return
    if target is not None and os.path.islink(path) and os.readlink(path) == target:
        return
    if target is None and not os.path.islink(path) and _is_ours(path):
        return
    raise InstallError(f"{path} exists and is not pymta's; use --force to replace it")


def _write_launcher(path: str, text: str) -> None:
    temporary = f"{path}.pymta-new"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)


def _link(path: str, target: str) -> None:
    temporary = f"{path}.pymta-new"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def install(sbin: str, bin_dir: str, python: str, force: bool = False) -> list[str]:
    """Write SBIN/sendmail and link BIN/mailq and BIN/newaliases to it; the paths."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pymta.__file__)))
    sendmail = os.path.join(sbin, "sendmail")
    target = os.path.relpath(sendmail, bin_dir)
    names = [os.path.join(bin_dir, "mailq"), os.path.join(bin_dir, "newaliases")]
    _replaceable(sendmail, None, force)
    for name in names:
        _replaceable(name, target, force)
    try:
        os.makedirs(sbin, exist_ok=True)
        os.makedirs(bin_dir, exist_ok=True)
        _write_launcher(sendmail, launcher_text(python, package_parent))
        for name in names:
            _link(name, target)
    except OSError as e:
        raise InstallError(f"{e.filename or sbin}: {e.strerror}") from None
    return [sendmail, *names]


def run(args: list[str], config_directory: str) -> int:
    """``pymta install-sendmail`` (the pymta command's signature)."""
    try:
        opts, rest = getopt.getopt(args, "", ["sbin=", "bin=", "python=", "force", "help"])
    except getopt.GetoptError as e:
        print(f"pymta: fatal: {e.msg}\n{USAGE}", file=sys.stderr)
        return 1
    if rest:
        print(f"pymta: fatal: unexpected argument {rest[0]!r}\n{USAGE}", file=sys.stderr)
        return 1
    values = dict(opts)
    if "--help" in values:
        print(USAGE)
        return 0
    try:
        written = install(
            values.get("--sbin", "/usr/sbin"),
            values.get("--bin", "/usr/bin"),
            values.get("--python", sys.executable),
            "--force" in values,
        )
    except InstallError as e:
        print(f"pymta: fatal: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"pymta: wrote {path}")
    return 0
