"""folder_scan: find what other programs did to a Maildir folder.

Mirrors Dovecot's maildir-sync.c: the files of ``new/`` and ``cur/`` are
the folder; a change of either directory's mtime means someone added,
renamed (flags) or removed a file, and a listing compared with the index
finds out what (new files numbered in arrival order, renames read as flag
changes, missing files as expunges). The folder's own renames need no
listing (``_own_change``). The store's asynchronous API runs a scan in
its threads (:mod:`pymta.mailstore.asyncstore`).

Untrusted input: file names (dot files, odd characters and anything but a
regular file are skipped) and their size hints. May write: the index.
Logs nothing of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace

from pymta.mailstore.files import (
    measure_file,
)
from pymta.mailstore.folder_base import (
    _NO_FLAGS,
    FolderBase,
)
from pymta.mailstore.index import (
    message_info,
)
from pymta.mailstore.interface import (
    FolderChange,
    MessageInfo,
)
from pymta.mailstore.names import (
    arrival_key,
    is_acceptable_filename,
    letters_to_flags,
    split_filename,
)


class FolderScan(FolderBase):
    """The scan layer of a Maildir folder (see the module doc)."""

    # -- directory scanning ------------------------------------------------

    @contextlib.contextmanager
    def _own_change(self) -> Iterator[None]:
        """Our own renames need no rescan, unless someone else changed the
        directories since the last scan. (Another program's change in the
        same mtime tick as ours, a few ms, is seen only at the directory's
        next change: the price of not listing 100,000 names after each
        STORE. Deliveries go to new/, which our flag changes do not touch.)"""
        before = self._dir_stat(raw=True)
        yield
        if self._dir_stamp is not None and before == self._dir_stamp:
            self._dir_stamp = self._dir_stat(raw=True)

    def _list(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            for name in names:
                if is_acceptable_filename(name):
                    found[split_filename(name)[0]] = (sub, name)
        return found

    def _scan_locked(
        self, force: bool = False, preassigned: dict[str, int] | None = None
    ) -> list[FolderChange]:
        current = self._dir_stat(raw=True)
        if not force and current is not None:
            if current == self._dir_stamp:
                return []
            if current == self._index.scan_stamp:
                # Another process changed the directories on top of a state
                # it trusted and wrote that stamp with the records we have
                # just read: our image matches them without a listing.
                self._dir_stamp = current
                return []
        stamp = self._dir_stat()  # taken before listing: later changes show
        index = self._index
        found = self._list()
        missing = [b for b in index.by_base if b not in found]
        if missing:
            # A message renamed (flags changed by another program) between
            # our two listdirs would look gone: look again before expunging.
            found.update(self._list())
        self._load_keywords()
        modseq = index.highest_modseq
        updates: list[MessageInfo] = []
        expunged: list[tuple[int, int]] = []
        changed: list[int] = []
        for base, uid in list(index.by_base.items()):
            info = index.records[uid]
            where = found.pop(base, None)
            if where is None:
                if not expunged:
                    modseq += 1
                expunged.append((uid, modseq))
                continue
            filename = f"{where[0]}/{where[1]}"
            if filename == info.filename:
                continue
            flags, keywords = letters_to_flags(split_filename(where[1])[1], self._kw_names)
            # Keywords with no letter live only in the index: keep them.
            keywords |= frozenset(k for k in info.keywords if k not in self._kw_letters)
            if (flags, keywords) != (info.flags, info.keywords):
                modseq += 1
                changed.append(uid)
                info = replace(info, flags=flags, keywords=keywords, modseq=modseq)
            updates.append(replace(info, filename=filename, recent=where[0] == "new"))
        added: list[MessageInfo] = []
        uid = index.uidnext
        taken = set(index.records)
        for sub, name in sorted(found.values(), key=lambda where: arrival_key(where[1])):
            old_uid = (preassigned or {}).get(split_filename(name)[0])
            fresh = old_uid is None or old_uid in taken or old_uid >= index.uidnext
            new_uid = uid if fresh or old_uid is None else old_uid
            made = self._describe(sub, name, new_uid, modseq + 1)
            if made is not None:
                modseq += 1
                added.append(made)
                taken.add(made.uid)
                uid += 1 if fresh else 0
        added.sort(key=lambda m: m.uid)  # messages() lists in UID order
        index.put(updates + added, expunged, stamp)
        self._dir_stamp = stamp
        notices: list[FolderChange] = []
        if expunged:
            notices.append(FolderChange("expunge", tuple(u for u, _ in expunged), modseq))
        if changed:
            notices.append(FolderChange("flags", tuple(sorted(changed)), modseq))
        if added:
            notices.append(FolderChange("append", tuple(m.uid for m in added), modseq))
        return notices

    def _describe(self, sub: str, name: str, uid: int, modseq: int) -> MessageInfo | None:
        """Index entry for a file another program wrote (None if unusable)."""
        filename = f"{sub}/{name}"
        measured = measure_file(self.path, filename)
        if measured is None:
            return None
        size, vsize, mtime = measured
        letters = split_filename(name)[1]
        flags, keywords = letters_to_flags(letters, self._kw_names) if letters else _NO_FLAGS
        return message_info(
            uid, size, vsize, mtime, flags, keywords, modseq, filename, sub == "new"
        )

    def refresh(self) -> list[MessageInfo]:
        with self._locked() as notices:
            notices.extend(self._scan_locked())
            appended = sorted(u for n in notices if n.kind == "append" for u in n.uids)
            return [self._index.records[u] for u in appended if u in self._index.records]

    def changed_on_disk(self) -> bool:
        if not self._index.loaded or not self._index.is_current():
            return True
        current = self._dir_stat(raw=True)
        return current is None or current != self._dir_stamp
