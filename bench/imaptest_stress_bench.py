#!/usr/bin/env python3
"""imaptest_stress_bench - imaptest's stress mode against pymta and Dovecot.

SYNOPSIS
    python bench/imaptest_stress_bench.py --imaptest PATH --mbox PATH
        [--clients 5,50] [--seconds 60] [--repeat 3] [--pymta-processes 0]
        [--imaptest-libs /usr/lib/dovecot] [--only dovecot|pymta]
        [--workdir /var/tmp] [--keep] [--mailbox-user nobody]

DESCRIPTION
    The figure of issue 15: the rate and server CPU per command of
    Dovecot's own test tool, imaptest, in its random stress mode with
    state tracking on (its default), against pymta and a Dovecot on the
    same machine in the same run, on loopback only.

    Both servers are private instances (bench/retrieval_pymta.py and
    bench/dovecot_setup.py, as bench/imap_bench.py sets them up), read
    the same Dovecot passwd-file ({PLAIN}) and serve Maildirs owned by
    --mailbox-user.  For each --clients value and repetition there is a
    fresh user whose Maildir starts empty on both servers, so each run
    starts from the same mailbox; imaptest fills it by appending from
    --mbox.  Per repetition and clients value each server gets one run of

        imaptest host=127.0.0.1 port=P user=U pass=PW mbox=MBOX
                 clients=N secs=S

    (the servers taking turns in which goes first).  The figures of a run:
    commands = the sum of imaptest's "Totals:" row (every command it
    sent), errors = its lines starting with "Error" (protocol or state
    tracking failures), the wall time from imaptest's start to its exit,
    and the server's CPU over that time: user + system time of the
    server's whole process tree, reaped children included
    (bench_measure.tree_cpu_seconds: for Dovecot its master, login, auth
    and imap processes; for pymta twistd and its worker processes).

    The table gives, per clients value, each server's commands/s, errors
    and CPU ms per command of the run of median rate over --repeat
    (errors: the sum over all repetitions), and the ratios pymta/Dovecot
    of the rate and of the CPU per command.  The most frequent error
    kinds are listed under the table; --keep keeps every imaptest output
    (workdir/imaptest-SERVER-cN-rR.txt).

    All N clients of a run log in as one user, from one address, at
    once: pymta's main.cf here has "imapd_max_userip_connections = 0",
    and "pymta_auth_client_concurrency_limit" and
    "imapd_max_login_ip_connections" above the largest clients value
    (their defaults, 10 logins in progress and 20 connections not yet
    logged in per address, would refuse some of 50 clients: imaptest
    reports each refusal as an error), and Dovecot's
    "mail_max_userip_connections" (default 10) is raised above it
    likewise.
    pymta runs with "pymta_processes = 0" (one reactor per CPU, as
    Dovecot uses every core) unless --pymta-processes says otherwise.

REQUIREMENTS
    root; Debian's dovecot-imapd (Dovecot 2.3); an imaptest binary you
    built yourself from Dovecot's imaptest sources (this bench neither
    fetches nor builds it).  A libtool-built imaptest whose directory
    holds no libdovecot needs Dovecot's private libraries: the bench
    runs it with LD_LIBRARY_PATH=--imaptest-libs (default
    /usr/lib/dovecot, where Debian's dovecot-core puts libdovecot.so.0;
    --imaptest-libs "" leaves the environment alone).  An mbox file of
    test messages for --mbox.

EXAMPLES
    python bench/imaptest_stress_bench.py --imaptest ~/imaptest/src/imaptest \\
        --mbox ~/stress.mbox --clients 5,50 --seconds 30 --repeat 1
"""

from __future__ import annotations

import argparse
import collections
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import tree_cpu_seconds
from dovecot_setup import DovecotServer, dovecot_missing
from retrieval_bench import RetrievalServer, progress, scratch
from retrieval_corpus import DOMAIN, BenchUser, passwd_text
from retrieval_pymta import PymtaRetrievalServer, has_imapd
from retrieval_run import LISTEN_HOST

SERVERS = ("pymta", "dovecot")
_INTEGERS = re.compile(r"^\s*\d+(\s+\d+)*\s*$")
# What varies between two reports of one error kind: the user name with
# imaptest's client number ("user@dom[12]"), UIDs, sequence numbers.
_ERROR_NOISE = re.compile(r"\S+@\S+\[\d+\]|\d+")


def total_commands(output: str) -> int | None:
    """The sum of imaptest's "Totals:" row, or None when it printed none.

    After the line "Totals:" imaptest prints the column names, one or two
    rows of percentages and then one row of counts, one per command kind;
    the first row that holds only integers is the counts."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Totals:":
            for row in lines[i + 1 : i + 6]:
                if _INTEGERS.match(row):
                    return sum(int(n) for n in row.split())
            return None
    return None


def error_lines(output: str) -> list[str]:
    """imaptest's error reports: the lines starting with "Error"."""
    return [line for line in output.splitlines() if line.startswith("Error")]


def error_kinds(errors: list[str], top: int = 5) -> list[tuple[int, str]]:
    """The most frequent kinds of error (numbers and user names masked)."""
    counts = collections.Counter(_ERROR_NOISE.sub("#", e)[:160] for e in errors)
    return [(n, kind) for kind, n in counts.most_common(top)]


@dataclass
class StressRun:
    """One imaptest run against one server."""

    server: str
    clients: int
    rep: int
    seconds: float
    commands: int
    cpu_seconds: float
    errors: list[str] = field(default_factory=list)
    failure: str = ""  # imaptest printed no totals, exited badly or timed out

    @property
    def rate(self) -> float:
        """Commands per second."""
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_command(self) -> float:
        """Server CPU milliseconds per command."""
        return 1000 * self.cpu_seconds / max(1, self.commands)


class StressDovecot(DovecotServer):
    """The bench's Dovecot, admitting ``userip_limit`` sessions of one user
    from one address (mail_max_userip_connections, default 10)."""

    def __init__(self, *args: object, userip_limit: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.userip_limit = userip_limit

    def write_config(self) -> None:
        super().write_config()
        with open(self.conf, "a") as f:
            f.write(f"protocol imap {{\n  mail_max_userip_connections = {self.userip_limit}\n}}\n")


def stress_users(clients: list[int], repeat: int) -> list[BenchUser]:
    """One fresh user per clients value and repetition (the same on both servers)."""
    return [
        BenchUser(f"stress{c}r{rep}@{DOMAIN}", f"pw-stress{c}r{rep}", rep, c)
        for c in clients
        for rep in range(1, repeat + 1)
    ]


def empty_maildirs(server: RetrievalServer, users: list[BenchUser], uid: int, gid: int) -> None:
    """An empty Maildir (cur, new, tmp) per user, owned by uid:gid."""
    for u in users:
        home = server.mail_root / u.maildir
        for sub in ("cur", "new", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        for d in (home, home / "cur", home / "new", home / "tmp", home.parent, server.mail_root):
            os.chown(d, uid, gid)


def imaptest_env(binary: Path, libs: str) -> dict[str, str]:
    """The environment to run imaptest in (see REQUIREMENTS)."""
    env = dict(os.environ)
    has_own_libs = any(binary.parent.glob("libdovecot*.so*"))
    if libs and not has_own_libs:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
    return env


def run_imaptest(
    args: argparse.Namespace,
    server: RetrievalServer,
    user: BenchUser,
    out_path: Path,
) -> StressRun:
    """One imaptest stress run against server, measured (see DESCRIPTION)."""
    argv = [
        str(args.imaptest),
        f"host={LISTEN_HOST}",
        f"port={server.imap_port}",
        f"user={user.name}",
        f"pass={user.password}",
        f"mbox={args.mbox}",
        f"clients={user.client}",
        f"secs={args.seconds}",
    ]
    env = imaptest_env(args.imaptest, args.imaptest_libs)
    roots = server.root_pids()
    failure = ""
    with open(out_path, "wb") as out:
        cpu_before = tree_cpu_seconds(roots)
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        try:
            code = proc.wait(timeout=args.seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            failure = f"imaptest did not exit within {args.seconds + 120} s"
        seconds = time.monotonic() - start
        cpu = tree_cpu_seconds(roots) - cpu_before
    output = out_path.read_text(errors="replace")
    commands = total_commands(output)
    if commands is None and not failure:
        tail = " | ".join(output.strip().splitlines()[-3:])
        failure = f"imaptest exited {code} without totals: {tail[:300]}"
    return StressRun(
        server=server.name,
        clients=user.client,
        rep=user.rep,
        seconds=seconds,
        commands=commands or 0,
        cpu_seconds=cpu,
        errors=error_lines(output),
        failure=failure,
    )


def median_run(runs: list[StressRun]) -> StressRun:
    """The run of median rate (lower median); a failed run wins if there is one."""
    failed = [r for r in runs if r.failure]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def render(args: argparse.Namespace, clients: list[int], runs: list[StressRun]) -> str:
    """The table of the median runs and the ratios pymta/Dovecot."""
    out = [
        f"imaptest stress (state tracking), {args.seconds} s per run, median of {args.repeat};"
        f" pymta_processes = {args.pymta_processes}",
        f"{'clients':>7} | {'pymta cmd/s':>11} {'errors':>6} {'CPU ms/cmd':>10} | "
        f"{'dovecot cmd/s':>13} {'errors':>6} {'CPU ms/cmd':>10} | {'rate':>6} {'CPU/cmd':>7}",
    ]
    notes: list[str] = []
    for c in clients:
        cells: list[str] = []
        medians: dict[str, StressRun] = {}
        for name, width in (("pymta", 11), ("dovecot", 13)):
            mine = [r for r in runs if r.server == name and r.clients == c]
            if not mine:
                cells.append(f"{'-':>{width}} {'-':>6} {'-':>10}")
                continue
            m = medians[name] = median_run(mine)
            errors = sum(len(r.errors) for r in mine)
            cells.append(f"{m.rate:>{width}.0f} {errors:>6} {m.cpu_ms_per_command:>10.3f}")
            for r in mine:
                if r.failure:
                    notes.append(f"  FAILED {name} clients={c} rep {r.rep}: {r.failure}")
            for n, kind in error_kinds([e for r in mine for e in r.errors]):
                notes.append(f"  {name} clients={c}: {n} x {kind}")
        if len(medians) == 2 and not any(m.failure for m in medians.values()):
            p, d = medians["pymta"], medians["dovecot"]
            rate = f"{p.rate / max(1e-9, d.rate):.2f}x"
            cpu = f"{p.cpu_ms_per_command / max(1e-9, d.cpu_ms_per_command):.2f}x"
        else:
            rate = cpu = "-"
        out.append(f"{c:>7} | {cells[0]} | {cells[1]} | {rate:>6} {cpu:>7}")
    out.append("ratios: pymta/dovecot (rate: higher is better; CPU per command: lower)")
    return "\n".join(out + notes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="imaptest stress: pymta and Dovecot side by side.")
    p.add_argument("--imaptest", type=Path, required=True, help="your imaptest binary")
    p.add_argument("--mbox", type=Path, required=True, help="mbox imaptest appends from")
    p.add_argument(
        "--imaptest-libs",
        default="/usr/lib/dovecot",
        help="LD_LIBRARY_PATH for imaptest when its directory has no libdovecot ('' for none)",
    )
    p.add_argument("--clients", default="5,50", help="comma-separated client counts")
    p.add_argument("--seconds", type=int, default=60, help="imaptest secs= per run")
    p.add_argument("--repeat", type=int, default=3, help="runs per server and clients (median)")
    p.add_argument(
        "--pymta-processes",
        type=int,
        default=0,
        help="pymta_processes in pymta's main.cf (0: one reactor process per CPU)",
    )
    p.add_argument("--only", choices=SERVERS, help="run against one server only")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="temp dir parent")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--mailbox-user", default="nobody", help="owner of the Maildirs")
    args = p.parse_args(argv)
    try:
        args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        p.error("--clients takes comma-separated integers, e.g. 5,50")
    if not args.client_counts or min(args.client_counts) < 1:
        p.error("--clients takes counts of at least 1")
    if args.repeat < 1 or args.seconds < 1 or args.pymta_processes < 0:
        p.error("--repeat and --seconds must be at least 1, --pymta-processes at least 0")
    return args


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a run failed or found errors."""
    args = parse_args(argv)
    for path, what in ((args.imaptest, "--imaptest"), (args.mbox, "--mbox")):
        if not path.is_file():
            print(f"imaptest_stress_bench: {what} {path}: no such file", file=sys.stderr)
            return 2
    names = [args.only] if args.only else list(SERVERS)
    if "pymta" in names and not has_imapd():
        print("imaptest_stress_bench: this checkout's pymta has no imapd", file=sys.stderr)
        return 2
    if "dovecot" in names and (why := dovecot_missing()):
        print(f"imaptest_stress_bench: {why}", file=sys.stderr)
        return 2
    owner = pwd.getpwnam(args.mailbox_user)
    uid, gid = owner.pw_uid, owner.pw_gid
    signal.signal(signal.SIGTERM, _on_signal)
    users = stress_users(args.client_counts, args.repeat)
    # Headroom over the largest run: imaptest may reconnect a client
    # while its old session is still being torn down.
    limit = 2 * max(args.client_counts) + 10
    pymta_cf = (
        f"pymta_processes = {args.pymta_processes}\n"
        "imapd_max_userip_connections = 0\n"
        f"pymta_auth_client_concurrency_limit = {limit}\n"
        f"imapd_max_login_ip_connections = {limit}\n"
    )
    runs: list[StressRun] = []
    with scratch("imaptest_stress_bench", args.workdir, args.keep) as workdir:
        makers = {
            "pymta": lambda: PymtaRetrievalServer(
                workdir,
                passwd_text(users, workdir / "pymta" / "mail", uid, gid),
                imap=True,
                extra_main_cf=pymta_cf,
            ),
            "dovecot": lambda: StressDovecot(
                workdir,
                passwd_text(users, workdir / "dovecot" / "mail", uid, gid),
                uid,
                gid,
                userip_limit=limit,
            ),
        }
        servers: list[RetrievalServer] = []
        try:
            for name in names:
                server: RetrievalServer = makers[name]()
                servers.append(server)
                server.mail_root.mkdir(parents=True, exist_ok=True)
                empty_maildirs(server, users, uid, gid)
                server.start()
                progress(f"imaptest_stress_bench: {name} IMAP on {LISTEN_HOST}:{server.imap_port}")
            turn = 0
            for rep in range(1, args.repeat + 1):
                for c in args.client_counts:
                    user = next(u for u in users if u.rep == rep and u.client == c)
                    turn += 1
                    for server in servers if turn % 2 else list(reversed(servers)):
                        out_path = workdir / f"imaptest-{server.name}-c{c}-r{rep}.txt"
                        r = run_imaptest(args, server, user, out_path)
                        runs.append(r)
                        progress(
                            f"imaptest_stress_bench: {server.name} clients={c} rep {rep}: "
                            f"{r.rate:.0f} cmd/s, {len(r.errors)} errors, "
                            f"{r.cpu_ms_per_command:.3f} ms CPU/cmd"
                            + (f", FAILED: {r.failure}" if r.failure else "")
                        )
        finally:
            for server in servers:
                server.stop()
    print(render(args, args.client_counts, runs))
    return 1 if any(r.failure or r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
