#!/usr/bin/env python3
"""fast_guess - guess a user's PIN over many parallel connections.

SYNOPSIS
    python bench/attacks/fast_guess.py [--protocol pop3|imap] [--connections 20]
        [--seconds 60] [--warmup 30] [--processes 2]
        [--failure-delay 2s] [--max-delay 15s] [--give-up 0.3]

DESCRIPTION
    On loopback only: starts pymta (tests/harness.py, twistd -n) with a
    pop3d and an imapd listener, --processes reactor processes
    (pymta_processes) and the given pymta_auth_failure_delay and
    pymta_auth_failure_max_delay, and one user pin@example.test whose
    password is a 4-digit PIN.

    --connections threads then guess PINs from 127.0.0.1, each on a fresh
    connection per guess (POP3 USER/PASS or IMAP LOGIN), for --warmup plus
    --seconds. Each waits for the answer (up to 60 s) and notes how long it
    took; a refusal for too many attempts in progress is retried after
    50 ms. This is the attack measured on the old code: before the penalty came before
    the check, a wrong PIN was answered after 2, 4, 8, 15 s but a right one
    at once, so "no answer within 0.3 s" meant "wrong", and parallel
    connections guessed about 65 PINs/s on POP3 and 63/s on IMAP.

    Prints one line: the case, HELD or NOT HELD, and the figures counted
    after the warm-up: guesses answered per second during the measured
    time (each one a password the server checked), guesses answered within 0.3 s (which an attacker
    could tell apart early), attempts refused, and whether the right PIN
    was found. HELD: at most one answered guess per max-delay (plus one),
    and none answered within 0.3 s.

    With --give-up 0.3 the attacker is the impatient one measured on the old code: it takes
    no answer within 0.3 s as a wrong PIN, hangs up and guesses again. The
    line then gives the guesses it settled per second and whether it
    recognised the right PIN (tried after its first 100 guesses); HELD: it
    did not.

    The server is stopped and its temporary directory removed at the end,
    also on error or ^C.

EXAMPLE
    python bench/attacks/fast_guess.py --protocol imap
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, POP3_SERVICE, PymtaServer  # noqa: E402

USER = "pin@example.test"
PIN = "7391"
EARLY = 0.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Guess a PIN over parallel connections.")
    p.add_argument("--protocol", choices=("pop3", "imap"), default="pop3")
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--failure-delay", default="2s")
    p.add_argument("--max-delay", default="15s")
    p.add_argument(
        "--give-up",
        type=float,
        default=0.0,
        help="take no answer within this many seconds as a wrong PIN (the impatient attacker: 0.3)",
    )
    return p.parse_args(argv)


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def try_pin(protocol: str, port: int, pin: str, patience: float) -> str:
    """One guess on a fresh connection: 'ok', 'wrong', 'refused', 'silent'
    (no answer within patience) or 'error'."""
    try:
        return _try_pin(protocol, port, pin, patience)
    except TimeoutError:
        return "silent"


def _try_pin(protocol: str, port: int, pin: str, patience: float) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        _line(sock)  # greeting
        if protocol == "pop3":
            sock.sendall(f"USER {USER}\r\n".encode())
            _line(sock)
            sock.sendall(f"PASS {pin}\r\n".encode())
            sock.settimeout(patience)
            reply = _line(sock)
            if reply.startswith(b"+OK"):
                return "ok"
            if b"Too many login attempts" in reply:
                return "refused"
            return "wrong" if b"[AUTH]" in reply else "error"
        sock.sendall(f"a LOGIN {USER} {pin}\r\n".encode())
        sock.settimeout(patience)
        while True:
            reply = _line(sock)
            if not reply or reply.startswith(b"a "):
                break
        if reply.startswith(b"a OK"):
            return "ok"
        if b"Too many login attempts" in reply:
            return "refused"
        return "wrong" if b"AUTHENTICATIONFAILED" in reply else "error"


class Attack:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.port = port
        self.lock = threading.Lock()
        self.pins = iter([f"{n:04d}" for n in range(10_000) if f"{n:04d}" != PIN][:4000])
        # The right PIN comes early enough to be tried during the run.
        self.queue = [PIN]
        self.start = 0.0
        self.answered: list[tuple[float, float, str]] = []  # sent, waited, outcome
        # Guesses the attacker took as settled (answered, or silent past
        # --give-up): sent, when settled.
        self.settled: list[tuple[float, float]] = []
        self.refused = 0
        self.found = False
        self.stop_at = 0.0

    def next_pin(self) -> str | None:
        with self.lock:
            if len(self.settled) >= 100 and self.queue:
                return self.queue.pop()
            return next(self.pins, None)

    def worker(self) -> None:
        while time.monotonic() < self.stop_at:
            pin = self.next_pin()
            if pin is None:
                return
            sent = time.monotonic()
            patience = self.args.give_up if self.args.give_up else 60.0
            try:
                outcome = try_pin(self.args.protocol, self.port, pin, patience)
            except OSError:
                outcome = "error"
            waited = time.monotonic() - sent
            with self.lock:
                if outcome == "refused":
                    self.refused += sent >= self.start + self.args.warmup
                    self.queue.append(pin)
                elif outcome in ("ok", "wrong", "silent"):
                    self.settled.append((sent, sent + waited))
                    if outcome != "silent":
                        self.answered.append((sent, waited, outcome))
                    self.found = self.found or outcome == "ok"
                else:
                    self.queue.append(pin)
            if outcome == "refused":
                time.sleep(0.05)

    def run(self) -> None:
        self.start = time.monotonic()
        self.stop_at = self.start + self.args.warmup + self.args.seconds
        threads = [threading.Thread(target=self.worker) for _ in range(self.args.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    max_delay = seconds(args.max_delay)
    with tempfile.TemporaryDirectory(prefix="fast_guess.") as tmp:
        server = PymtaServer(
            Path(tmp),
            main_cf_extra=(
                f"pymta_processes = {args.processes}\n"
                f"pymta_auth_failure_delay = {args.failure_delay}\n"
                f"pymta_auth_failure_max_delay = {args.max_delay}\n"
            ),
            master_cf=DEFAULT_MASTER_CF + POP3_SERVICE + IMAP_SERVICE,
            vmailbox=f"{USER} example.test/pin/\n",
            passwd=f"{USER}:{{PLAIN}}{PIN}::::::\n",
        )
        with server:
            server.start()
            if args.processes > 1:
                server.wait_for_log(r"worker 1 running")
            port = server.pop3_port if args.protocol == "pop3" else server.imap_port
            attack = Attack(args, port)
            attack.run()
            server.stop()
    measured_from = attack.start + args.warmup
    # Answers that came during the measured time (the server checked them then).
    after = [
        (sent, waited, o) for sent, waited, o in attack.answered if sent + waited >= measured_from
    ]
    early = [a for a in after if a[1] < EARLY]
    rate = len(after) / args.seconds
    limit = args.seconds / max_delay + 1
    if args.give_up:
        # The impatient attacker: it settles many guesses, but wins only if
        # the right PIN's answer came before it gave up.
        settled = [s for s in attack.settled if s[1] >= measured_from]
        held = not attack.found
        print(
            f"fast_guess {args.protocol} x{args.connections} giving up after {args.give_up} s "
            f"({args.processes} processes, max delay {args.max_delay}): "
            f"{'HELD' if held else 'NOT HELD'} {len(settled) / args.seconds:.1f} guesses/s "
            f"settled after {args.warmup:.0f} s warm-up, {len(early)} answered within "
            f"{EARLY} s, {attack.refused} refused, right PIN found: "
            f"{'yes' if attack.found else 'no'}"
        )
        return 0 if held else 1
    held = len(after) <= limit and not early
    print(
        f"fast_guess {args.protocol} x{args.connections} ({args.processes} processes, "
        f"max delay {args.max_delay}): {'HELD' if held else 'NOT HELD'} "
        f"{rate:.3f} guesses/s answered after {args.warmup:.0f} s warm-up "
        f"({len(after)} in {args.seconds:.0f} s, limit {limit:.0f}), "
        f"{len(early)} answered within {EARLY} s, {attack.refused} refused, "
        f"{len(attack.answered)} answered in all, right PIN found: "
        f"{'yes' if attack.found else 'no'}"
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
