"""Tests of smtp_phases' and reactor_instructions' own logic (bench/): no
mail server is run; a socketpair stands in for the server's socket."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reactor_instructions
import smtp_phases


def test_reply_reads_a_multiline_reply_to_its_last_line() -> None:
    """Conversation.reply returns a reply's last line (``NNN text``) after
    its ``NNN-`` lines, even split across reads, and keeps what follows
    for the next reply."""
    ours, theirs = socket.socketpair()
    talk = smtp_phases.Conversation.__new__(smtp_phases.Conversation)
    talk.sock, talk.pending = ours, b""
    try:
        theirs.sendall(b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE")
        theirs.sendall(b" 10240000\r\n354 go ahead\r\n")
        assert talk.reply() == b"250 SIZE 10240000"
        assert talk.reply() == b"354 go ahead"
    finally:
        ours.close()
        theirs.close()


def test_message_text_has_the_size_asked_and_no_lone_dot() -> None:
    """The generated message is as long as asked (past its header), ends
    with CRLF and holds no line a server would read as the end of data."""
    for size in (1024, 10240, 100):
        text = smtp_phases.message_text(size, 7)
        assert text.endswith(b"\r\n")
        assert len(text) == max(size, len(text.split(b"\r\n\r\n", 1)[0]) + 4)
        assert b"\r\n.\r\n" not in text and not text.startswith(b".")


def test_totals_reads_every_threads_dump(tmp_path: Path) -> None:
    """reactor_instructions.totals maps each thread's dump file (``.PID.1-NN``)
    to its ``totals:`` line; a file without one counts 0."""
    prefix = tmp_path / "callgrind.out"
    (tmp_path / "callgrind.out.77.1-01").write_text("events: Ir\ntotals: 1500\n")
    (tmp_path / "callgrind.out.77.1-02").write_text("events: Ir\ntotals: 20\n")
    (tmp_path / "callgrind.out.77.1-03").write_text("events: Ir\n")
    (tmp_path / "callgrind.out.77").write_text("totals: 999\n")  # the final dump: not read
    assert reactor_instructions.totals(prefix) == {1: 1500, 2: 20, 3: 0}
