"""The end-to-end harness's own waiting (tests/harness.py)."""

from __future__ import annotations

from pathlib import Path

from tests.harness import wait_for_file


def test_wait_for_file_follows_directories_made_while_waiting(tmp_path: Path) -> None:
    """A Maildir that does not exist yet is waited for through its existing
    ancestor, then each directory as it appears, until the file lands: the
    server makes a Maildir on its first delivery, after the test started
    waiting. Each step here happens inside a ready() check, so every later
    check is reached only through an inotify event."""
    new = tmp_path / "example.test" / "alice" / "new"
    steps = [
        lambda: (tmp_path / "example.test").mkdir(),
        lambda: (tmp_path / "example.test" / "alice").mkdir(),
        lambda: new.mkdir(),
        lambda: (new / "1.msg").write_bytes(b"Subject: hi\n\nbody\n"),
    ]
    checks = 0

    def ready() -> bool:
        nonlocal checks
        checks += 1
        if steps:
            steps.pop(0)()
            return False
        return (new / "1.msg").exists()

    wait_for_file(new, ready, timeout=10)
    assert checks == 5


def test_wait_for_file_watches_the_directory_of_a_file(tmp_path: Path) -> None:
    """For a file (a maillog), the directory holding it is watched: the file's
    creation wakes the wait."""
    log = tmp_path / "maillog"
    calls: list[int] = []

    def ready() -> bool:
        calls.append(1)
        if len(calls) == 1:
            log.write_text("line\n")
            return False
        return log.read_text() == "line\n"

    wait_for_file(log, ready, timeout=10)
    assert len(calls) == 2


def test_a_missing_file_in_ready_means_not_ready(tmp_path: Path) -> None:
    """A predicate that reads a Maildir or log not made yet (FileNotFoundError)
    is taken as "not ready", and the wait goes on until it holds."""
    new = tmp_path / "alice" / "new"
    made: list[int] = []

    def ready() -> bool:
        if not made:
            made.append(1)
            try:
                return len(list(new.iterdir())) == 1
            finally:
                new.mkdir(parents=True)
                (new / "1.msg").write_bytes(b"x")
        return len(list(new.iterdir())) == 1

    wait_for_file(new, ready, timeout=10)
    assert made == [1]
