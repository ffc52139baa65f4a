"""pymta.testing's wait_for_file: woken by inotify, and still working when
the kernel gives no inotify instance (other programs of the same user
hold all of fs.inotify.max_user_instances), where it asks again at a short
interval instead of failing the test that waits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymta.testing import process


def test_a_file_written_in_the_directory_ends_the_wait(tmp_path: Path) -> None:
    """The condition is asked again after an event in the watched directory."""
    target = tmp_path / "log"
    asked: list[int] = []

    def ready() -> bool:
        asked.append(1)
        if len(asked) == 1:
            target.write_text("done\n")  # an inotify event for the next look
            return False
        return target.read_text() == "done\n"

    process.wait_for_file(target, ready, timeout=10)
    assert len(asked) == 2


def test_without_inotify_the_condition_is_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inotify instance: no OSError, and ready() is asked until it holds."""
    monkeypatch.setattr(process, "_inotify_init", lambda: None)
    monkeypatch.setattr(process, "POLL_WITHOUT_INOTIFY", 0.001)
    asked: list[int] = []

    def ready() -> bool:
        asked.append(1)
        return len(asked) >= 3

    process.wait_for_file(tmp_path / "missing" / "file", ready, timeout=10)
    assert len(asked) == 3


def test_without_inotify_the_deadline_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A condition that never holds ends in TimeoutError, inotify or not."""
    monkeypatch.setattr(process, "_inotify_init", lambda: None)
    with pytest.raises(TimeoutError):
        process.wait_for_file(tmp_path, lambda: False, timeout=0.01)
