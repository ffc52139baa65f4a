#!/usr/bin/env python3
"""queue_memory - server memory when 20 large messages are queued and delivered.

SYNOPSIS
    python bench/queue_memory.py [--connections 20] [--sizes 10240,10485760]
        [--workdir /var/tmp]

DESCRIPTION
    Issue 10's target: a message's content is never held by the queue
    manager or the delivery agents, so the server's memory for 20 messages
    of 10 MiB is that for 20 of 10 KiB plus a few MiB. For each size, on
    loopback only, with a pymta from this checkout (tests/harness.py):

    1. accept: a pymta without the virtual transport in master.cf (its
       mail is deferred, "mail transport unavailable") takes
       CONNECTIONS messages of SIZE bytes from Postfix's smtp-source
       (``-s CONNECTIONS -m CONNECTIONS -l SIZE``: that many sessions in
       parallel, one message each) and is stopped; its peak RSS (VmHWM)
       is the receiving side's (smtpd and cleanup);
    2. deliver: the messages are requeued (``pymta postsuper -r ALL``) and
       a fresh pymta delivers them all at once to a Maildir, up to the
       virtual transport's 20 parallel deliveries; its peak RSS is the
       queue manager's and the delivery agent's, from start to the last
       ``removed`` line.

    Prints, per size, both peaks in MiB, then one line comparing the
    delivery peaks: the growth from the small messages to the large ones.

REQUIREMENTS
    Debian's postfix package (smtp-source).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import DEFAULT_MASTER_CF, PymtaServer

EXTRA = "message_size_limit = 0\nqueue_run_delay = 3600s\n"


def peak_rss_mib(server: PymtaServer) -> float:
    """VmHWM of the server process, in MiB."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(root: Path, connections: int, size: int) -> tuple[float, float]:
    """(accept peak, deliver peak) in MiB for one message size."""
    held = "".join(line + "\n" for line in DEFAULT_MASTER_CF.splitlines() if "virtual" not in line)
    server = PymtaServer(root, main_cf_extra=EXTRA, master_cf=held)
    with server:
        server.start()
        subprocess.run(
            [
                "smtp-source",
                "-s", str(connections),
                "-m", str(connections),
                "-l", str(size),
                "-c",
                "-f", "load@client.test",
                "-t", "bob@example.test",
                f"127.0.0.1:{server.smtp_port}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )  # fmt: skip
        server.wait_for_log(r"status=deferred", count=connections, timeout=600)
        accept = peak_rss_mib(server)
        server.stop()
    (server.config_dir / "master.cf").write_text(DEFAULT_MASTER_CF)
    subprocess.run(
        [sys.executable, "-m", "pymta.cli.main", "postsuper", "-c", str(server.config_dir),
         "-r", "ALL"],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with server:
        server.start()
        server.wait_for_log(r": removed", count=connections, timeout=600)
        deliver = peak_rss_mib(server)
        server.stop()
    delivered = len(list((server.maildir("bob") / "new").iterdir()))
    if delivered != connections:
        raise RuntimeError(f"{delivered} of {connections} messages delivered")
    return accept, deliver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--sizes", default="10240,10485760", help="message bytes, small,large")
    parser.add_argument("--workdir", default=None, help="temp dir parent")
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        print("queue_memory: smtp-source not found (apt-get install postfix)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="queue-memory-", dir=args.workdir) as tmp:
        for size in sizes:
            results[size] = measure(Path(tmp) / str(size), args.connections, size)
            accept, deliver = results[size]
            print(
                f"size={size} connections={args.connections}"
                f" accept_peak_rss={accept:.1f}MiB deliver_peak_rss={deliver:.1f}MiB"
            )
    small, large = results[sizes[0]][1], results[sizes[-1]][1]
    print(
        f"deliver peak RSS: {small:.1f} MiB with {sizes[0]}-byte messages,"
        f" {large:.1f} MiB with {sizes[-1]}-byte messages: +{large - small:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
