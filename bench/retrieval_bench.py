"""retrieval_bench - what pop3_bench and imap_bench share.

SYNOPSIS
    from retrieval_bench import (MESSAGES, OPERATIONS, RetrievalServer,
                                 side_by_side, render, as_json)

DESCRIPTION
    side_by_side(...) gives every user of each server its own copy of the
    pristine Maildir, starts the servers, runs a warm-up repetition (0)
    and the measured ones - alternating which server goes first - and
    stops the servers, also on error or ^C.

    Both benches report the same figures per server - the rate of the
    median run, server CPU per counted unit, peak resident memory, client
    CPU per unit, every run's rate - and the ratio pymta/dovecot (render,
    as_json); they differ only in what they count: POP3 counts messages
    downloaded (MESSAGES), IMAP counts commands (OPERATIONS).

TRUST
    Writes the Maildirs it is given.  Not part of pymta.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from dovecot_setup import DovecotServer
from retrieval_corpus import BenchUser, copy_maildir, passwd_text
from retrieval_pymta import PymtaRetrievalServer
from retrieval_run import LISTEN_HOST, RunFigures, median_of, vm_hwm_bytes

SERVERS = ("dovecot", "pymta")


@dataclass(frozen=True)
class Unit:
    """What a bench counts, and how its labels name it."""

    plural: str  # the RunFigures attribute, e.g. "messages"
    singular: str  # e.g. "message"
    short: str  # in column labels, e.g. "msg"
    per_second: str  # e.g. "msg/s"

    def count(self, r: RunFigures) -> int:
        return int(getattr(r, self.plural))

    def rate(self, r: RunFigures) -> float:
        return self.count(r) / r.seconds if r.seconds > 0 else 0.0

    def cpu_ms(self, r: RunFigures) -> float:
        return r.cpu_ms_per(self.count(r))


MESSAGES = Unit("messages", "message", "msg", "msg/s")
OPERATIONS = Unit("operations", "operation", "op", "ops/s")


class RetrievalServer(Protocol):
    """What the benches need of a server (DovecotServer, PymtaRetrievalServer)."""

    name: str
    pop3_port: int
    imap_port: int
    mail_root: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def root_pids(self) -> list[int]: ...


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options both benches take (each adds its own scenario's)."""
    p.add_argument(
        "--pymta-processes",
        type=int,
        default=0,
        help="pymta_processes in pymta's main.cf (default 0: one reactor process per CPU,"
        " as Dovecot runs a process per connection on every core)",
    )
    p.add_argument("--clients", type=int, default=10, help="concurrent clients")
    p.add_argument("--messages", type=int, default=200, help="messages per mailbox")
    p.add_argument("--size", type=int, default=4096, help="approximate message bytes")
    p.add_argument("--repeat", type=int, default=3, help="measured runs per server (median)")
    p.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    p.add_argument(
        "--pymta-main-cf",
        action="append",
        default=[],
        metavar="LINE",
        help="extra main.cf line for pymta (repeatable), e.g. 'pop3d_timeout = 60s'",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="temp dir parent")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--mailbox-user", default="nobody", help="owner of the Maildirs")
    p.add_argument("--seed", type=int, default=1, help="corpus seed")


@contextlib.contextmanager
def scratch(bench: str, parent: Path, keep: bool) -> Iterator[Path]:
    """A temporary directory (world-readable: the servers drop privileges),
    removed afterwards unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{bench.replace('_', '')}.", dir=parent))
    os.chmod(workdir, 0o755)
    try:
        yield workdir
    finally:
        if keep:
            progress(f"{bench}: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def pymta_lines(args: argparse.Namespace) -> list[str]:
    """pymta's extra main.cf lines: ``pymta_processes`` first, then
    --pymta-main-cf (a later line overrides an earlier one, as in main.cf)."""
    if args.pymta_processes < 0:
        raise SystemExit("--pymta-processes must be 0 (one per CPU) or more")
    return [f"pymta_processes = {args.pymta_processes}", *args.pymta_main_cf]


def server_makers(
    workdir: Path,
    users: list[BenchUser],
    uid: int,
    gid: int,
    pymta_main_cf: list[str],
    imap: bool = False,
) -> dict[str, Callable[[], RetrievalServer]]:
    """How to make each server, on the same users and passwords."""
    return {
        "dovecot": lambda: DovecotServer(
            workdir, passwd_text(users, workdir / "dovecot" / "mail", uid, gid), uid, gid
        ),
        "pymta": lambda: PymtaRetrievalServer(
            workdir,
            passwd_text(users, workdir / "pymta" / "mail", uid, gid),
            extra_main_cf="".join(f"{line}\n" for line in pymta_main_cf),
            imap=imap,
        ),
    }


def populate(
    server: RetrievalServer, users: list[BenchUser], pristine: Path, uid: int, gid: int
) -> None:
    """Give every user of server its own copy of the pristine Maildir."""
    for u in users:
        copy_maildir(pristine, server.mail_root / u.maildir, uid, gid)
    for d in {(server.mail_root / u.maildir).parent for u in users} | {server.mail_root}:
        os.chown(d, uid, gid)


def progress(text: str) -> None:
    """Progress goes to stderr, so that --json output stays clean."""
    print(text, file=sys.stderr, flush=True)


@dataclass
class Mailboxes:
    """The users and their starting Maildir, owned by uid:gid."""

    users: list[BenchUser]
    pristine: Path
    uid: int
    gid: int


def side_by_side(
    bench: str,
    protocol: str,
    unit: Unit,
    servers_to_make: list[Callable[[], RetrievalServer]],
    mailboxes: Mailboxes,
    repeat: int,
    run_rep: Callable[[RetrievalServer, int], RunFigures],
) -> tuple[list[RunFigures], int | None]:
    """Every repetition of every server; and pymta's peak memory (VmHWM).
    ``protocol`` is "POP3" or "IMAP": the port the progress lines name."""
    servers: list[RetrievalServer] = []
    results: list[RunFigures] = []
    hwm: int | None = None
    try:
        for make in servers_to_make:
            server = make()
            servers.append(server)
            server.mail_root.mkdir(parents=True, exist_ok=True)
            populate(server, mailboxes.users, mailboxes.pristine, mailboxes.uid, mailboxes.gid)
            server.start()
            port = getattr(server, f"{protocol.lower()}_port")
            progress(f"{bench}: {server.name} {protocol} on {LISTEN_HOST}:{port}")
        for rep in range(repeat + 1):
            for server in servers if rep % 2 else list(reversed(servers)):
                r = run_rep(server, rep)
                results.append(r)
                label = "warm-up" if rep == 0 else f"rep {rep}"
                progress(
                    f"{bench}: {server.name} {label}: {unit.rate(r):.0f} {unit.per_second}, "
                    f"{unit.cpu_ms(r):.3f} ms CPU/{unit.short}"
                    + (f", {len(r.errors)} errors: {r.errors[0]}" if r.errors else "")
                )
        for server in servers:
            if server.name == "pymta" and server.root_pids():
                hwm = vm_hwm_bytes(server.root_pids()[0])
    finally:
        for server in servers:
            server.stop()
    return results, hwm


def fmt_mib(value: float | None) -> str:
    """Bytes as MiB, or '-'."""
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def render(
    title: str, results: list[RunFigures], unit: Unit, pymta_main_cf: list[str], hwm: int | None
) -> str:
    """The table of the median runs (warm-ups left out) and the ratio."""
    rate_label, cpu_label = unit.per_second, f"cpu ms/{unit.short}"
    client_label = f"client cpu ms/{unit.short}"
    out = [
        title,
        f"{'server':<8} {rate_label:>8} {cpu_label:>11} {'peak RSS':>11} "
        f"{client_label:>18}  runs ({rate_label})",
    ]
    medians: dict[str, RunFigures] = {}
    for name in SERVERS:
        runs = [r for r in results if r.server == name and r.rep > 0]
        if not runs:
            continue
        m = medians[name] = median_of(runs, unit.rate)
        client_ms = 1000 * m.client_cpu_seconds / max(1, unit.count(m))
        out.append(
            f"{name:<8} {unit.rate(m):>8.0f} {unit.cpu_ms(m):>11.3f} "
            f"{fmt_mib(max(r.peak_rss_bytes for r in runs)):>11} {client_ms:>18.3f}  "
            + ", ".join(f"{unit.rate(r):.0f}" for r in runs)
        )
        for r in runs:
            for e in r.errors[:5]:
                out.append(f"  ERROR {name} rep {r.rep}: {e}")
    if "dovecot" in medians and "pymta" in medians:
        d, p = medians["dovecot"], medians["pymta"]
        out.append(
            f"ratio pymta/dovecot: {unit.rate(p) / unit.rate(d):.2f} x {unit.plural}/s, "
            f"{unit.cpu_ms(p) / max(1e-9, unit.cpu_ms(d)):.2f} x CPU/{unit.singular}"
        )
    if "pymta" in medians:
        extra = "; ".join(pymta_main_cf) or "none"
        out.append(f"pymta: twistd VmHWM {fmt_mib(hwm)}; extra main.cf: {extra}")
    return "\n".join(out)


def as_json(
    scenario: str, results: list[RunFigures], unit: Unit, settings: dict[str, Any], hwm: int | None
) -> dict[str, Any]:
    """Every run's figures, plus the settings."""
    runs = []
    for r in results:
        d = asdict(r)
        d[f"{unit.plural}_per_second"] = unit.rate(r)
        d[f"server_cpu_ms_per_{unit.singular}"] = unit.cpu_ms(r)
        d["warmup"] = r.rep == 0
        runs.append(d)
    return {
        "scenario": scenario,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        "pymta_vm_hwm_bytes": hwm,
        "runs": runs,
    }
