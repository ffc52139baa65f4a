"""Maildir++ ``maildirsize``: written and kept in step with pymta's count
as Dovecot's quota driver ``maildir`` keeps it, and read by the real
Dovecot (doveadm) as pymta wrote it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymta.quota import maildirsize
from pymta.quota.maildirsize import header, parse, sync
from pymta.quota.policy import QuotaPolicy
from pymta.quota.rules import QuotaLimit
from pymta.quota.usage import MaildirUsage

LIMIT = QuotaLimit(1 << 20, 100)


def maildir(tmp_path: Path, *sizes: int) -> Path:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n, size in enumerate(sizes):
        (root / "cur" / f"{1700000000 + n}.M{n}P1.h,S={size}:2,S").write_bytes(b"x" * size)
    return root


def text(root: Path) -> bytes:
    return (root / "maildirsize").read_bytes()


@pytest.mark.parametrize(
    ("limit", "line"),
    [
        (QuotaLimit(1 << 30, None), b"1073741824S"),
        (QuotaLimit(1 << 20, 100), b"1048576S,100C"),
        (QuotaLimit(None, 100), b"100C"),
        (QuotaLimit(), b"0S"),
    ],
)
def test_header_as_dovecot_writes_it(limit: QuotaLimit, line: bytes) -> None:
    """The limits line: bytes S, messages C, a zero limit left out, 0S
    with none (Dovecot's maildirsize_write)."""
    assert header(limit) == line
    parsed = parse(line + b"\n0 0\n")
    assert parsed is not None
    assert (parsed.storage, parsed.messages) == (limit.storage or 0, limit.messages or 0)


def test_dovecot_file_is_summed() -> None:
    """A file as Dovecot left it (these bytes were written by Dovecot
    2.3.19: a recalculation of an empty Maildir, then one saved message)
    sums to its usage; a last line still being written is left out."""
    written = b"1048576S,100C\n0 0\n18 1\n"
    found = parse(written)
    assert found is not None
    assert (found.used_bytes, found.used_messages, found.changes) == (18, 1, 1)
    partial = parse(written + b"-18 -")
    assert partial is not None and partial.used_bytes == 18


@pytest.mark.parametrize(
    "data",
    [
        b"1048576S,100C\n",  # no usage line
        b"1048576S,100C\n10 1\n\x00\n",  # a NUL byte
        b"1048576S,100C\n10 1\nten 1\n",  # not numbers
        b"1048576S,100C\n10 1\n-20 -1\n",  # a negative sum
        b"1048576X\n10 1\n",  # a bad limit
        b"1048576S,100C\n" + b"1 0\n" * 1300,  # 5120 bytes or more
    ],
)
def test_damaged_or_long_files_are_not_believed(data: bytes) -> None:
    """What Dovecot counts again instead of believing is None here."""
    assert parse(data) is None


def test_sync_writes_then_appends_changes(tmp_path: Path) -> None:
    """The first count writes the file (limits line, usage line); a later
    different count appends one change line; the same count writes
    nothing."""
    root = maildir(tmp_path)
    sync(str(root), LIMIT, 300, 2)
    assert text(root) == b"1048576S,100C\n300 2\n"
    sync(str(root), LIMIT, 300, 2)
    assert text(root) == b"1048576S,100C\n300 2\n"
    sync(str(root), LIMIT, 250, 1)
    sync(str(root), LIMIT, 1250, 2)
    assert text(root) == b"1048576S,100C\n300 2\n-50 -1\n1000 1\n"


def test_add_appends_a_delivery_without_counting(tmp_path: Path) -> None:
    """After a delivery, add() appends the delivery's change line to a good
    file (what Dovecot appends at a save) and reads no directory: the file
    sums to the old usage plus the message even though the Maildir here
    holds nothing. A missing, damaged, foreign-limits or full file is not
    touched, and add() says so (False: the caller counts)."""
    root = maildir(tmp_path)
    sync(str(root), LIMIT, 300, 2)
    assert maildirsize.add(str(root), LIMIT, 1000, 1) is True
    assert text(root) == b"1048576S,100C\n300 2\n1000 1\n"
    (root / "maildirsize").unlink()
    assert maildirsize.add(str(root), LIMIT, 1000, 1) is False
    assert not (root / "maildirsize").exists()
    for kept in (b"garbage", b"5S\n1 1\n", b"1048576S,100C\n" + b"1 0\n" * 1276):
        (root / "maildirsize").write_bytes(kept)
        assert maildirsize.add(str(root), LIMIT, 1000, 1) is False
        assert text(root) == kept


def test_sync_writes_anew(tmp_path: Path) -> None:
    """The file is written anew when its limits are not the configured
    ones, when it is damaged, when a change would take it to 5120 bytes,
    and when it is over quota with changes in it (Dovecot's rules)."""
    root = maildir(tmp_path)
    (root / "maildirsize").write_bytes(b"5S\n1 1\n")
    sync(str(root), LIMIT, 10, 1)
    assert text(root) == b"1048576S,100C\n10 1\n"
    (root / "maildirsize").write_bytes(b"garbage")
    sync(str(root), LIMIT, 10, 1)
    assert text(root) == b"1048576S,100C\n10 1\n"
    for n in range(2, 800):
        sync(str(root), LIMIT, 10 * n, n % 7)
    assert len(text(root)) < maildirsize.MAX_SIZE
    assert text(root).startswith(b"1048576S,100C\n")
    found = parse(text(root))
    assert found is not None and (found.used_bytes, found.used_messages) == (7990, 799 % 7)
    small = QuotaLimit(100, None)
    (root / "maildirsize").write_bytes(b"100S\n50 1\n60 1\n")  # over, with a change
    sync(str(root), small, 110, 2)
    assert text(root) == b"100S\n110 2\n"


def test_policy_keeps_the_file_with_its_count(tmp_path: Path) -> None:
    """Every count for a user with a quota leaves maildirsize saying the
    count; without a quota no file is written."""
    root = maildir(tmp_path, 100, 200)
    policy = QuotaPolicy("*:storage=1M:messages=100", counter=MaildirUsage())
    state = policy.usage(str(root), LIMIT)
    assert (state.used_bytes, state.used_messages) == (300, 2)
    assert text(root) == b"1048576S,100C\n300 2\n"
    (root / "new" / "1700000009.M9P1.h,S=50").write_bytes(b"x" * 50)
    policy.usage(str(root), LIMIT)
    assert text(root) == b"1048576S,100C\n300 2\n50 1\n"
    bare = maildir(tmp_path / "other", 10)
    QuotaPolicy("", counter=MaildirUsage()).usage(str(bare), QuotaLimit())
    assert not (bare / "maildirsize").exists()


# With the real Dovecot -------------------------------------------------

DOVEADM = shutil.which("doveadm")
needs_doveadm = pytest.mark.skipif(
    DOVEADM is None or os.geteuid() != 0 or not os.path.exists("/usr/lib/dovecot/modules"),
    reason="needs Debian's dovecot-core (doveadm, the quota plugin) and root",
)


def doveadm(home: Path, *args: str, stdin: bytes = b"") -> str:
    """doveadm as the mail user on ``home``/Maildir with Maildir++ quota
    (no Dovecot service: the user comes from USER and HOME)."""
    conf = home / "dovecot.conf"
    conf.write_text(
        f"base_dir = {home}/run\nstate_dir = {home}/state\n"
        "mail_location = maildir:~/Maildir\nmail_plugins = quota\nssl = no\n"
        "plugin {\n  quota = maildir:User quota\n"
        "  quota_rule = *:storage=1M:messages=100\n}\n"
    )
    mail = pwd.getpwnam("mail")
    result = subprocess.run(
        [DOVEADM or "doveadm", "-c", str(conf), *args],
        input=stdin,
        capture_output=True,
        env={"USER": "sorter", "HOME": str(home), "PATH": os.environ.get("PATH", "")},
        user=mail.pw_uid,
        group=mail.pw_gid,
        extra_groups=[],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.fixture
def home() -> Iterator[Path]:
    """A home the mail user can reach (pytest's tmp_path is root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="pymta-maildirsize-", dir="/var/tmp"))
    os.chmod(top, 0o755)
    try:
        yield top / "home"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def owned_by_mail(home: Path) -> None:
    mail = pwd.getpwnam("mail")
    for path in [home, *home.rglob("*")]:
        os.chown(path, mail.pw_uid, mail.pw_gid)


@needs_doveadm
def test_dovecot_reads_what_pymta_wrote(home: Path) -> None:
    """Dovecot's quota driver takes the usage from the file pymta wrote
    (200 KiB and 7 messages, not what is in the Maildir: it believes the
    file, so the bytes are its own format)."""
    root = maildir(home, 100)
    maildirsize.write(str(root), LIMIT, 200 * 1024, 7)
    owned_by_mail(home)
    out = doveadm(home, "quota", "get")
    rows = {line.split()[2]: line.split()[3:5] for line in out.splitlines()[1:]}
    assert rows == {"STORAGE": ["200", "1024"], "MESSAGE": ["7", "100"]}


@needs_doveadm
def test_pymta_agrees_with_what_dovecot_wrote(home: Path) -> None:
    """After Dovecot counted the Maildir and saved a message (its file:
    a usage line and a change line), pymta's count is the file's sum, so
    pymta's next count leaves Dovecot's file as it is; a message pymta
    delivers is one change line Dovecot then reads."""
    root = maildir(home, 100, 250)
    owned_by_mail(home)
    doveadm(home, "quota", "recalc")
    doveadm(home, "save", stdin=b"Subject: hi\n\nbody\n")
    written = text(root)
    found = parse(written)
    assert found is not None and found.changes == 1
    policy = QuotaPolicy("*:storage=1M:messages=100", counter=MaildirUsage())
    state = policy.usage(str(root), LIMIT)
    assert (state.used_bytes, state.used_messages) == (found.used_bytes, found.used_messages)
    assert text(root) == written
    (root / "new" / "1700000009.M9P1.h,S=2048").write_bytes(b"x" * 2048)
    policy.usage(str(root), LIMIT)
    assert text(root) == written + b"2048 1\n"
    out = doveadm(home, "quota", "get")
    rows = {line.split()[2]: line.split()[3] for line in out.splitlines()[1:]}
    assert rows["MESSAGE"] == str(found.used_messages + 1)
