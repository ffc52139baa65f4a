"""folder_scan: find what other programs did to a Maildir folder.

Mirrors Dovecot's maildir-sync.c: the files of ``new/`` and ``cur/`` are
the folder; a change of either directory's mtime means someone added,
renamed (flags) or removed a file, and a listing compared with the index
finds out what (new files numbered in arrival order, renames read as flag
changes, missing files as expunges). The folder's own renames need no
listing (``_own_change``). The store's asynchronous API runs a scan in
its threads (:mod:`pymta.mailstore.asyncstore`).

As Dovecot's first SELECT, a scan reads directories, not messages, and
does not ``stat`` the files it finds: the listing's file types
(``d_type``) leave out anything but a regular file; a file's RFC822.SIZE
and flags come from its name (``,S=``/``,W=``, ``:2,`` letters; the sizes
trusted as Dovecot trusts them when they are possible ones: a literal's
length is always counted from the bytes sent), its place in arrival
order from the name's leading time stamp
(:func:`~pymta.mailstore.names.arrival_key`), and its INTERNALDATE (the
file's mtime) is left unknown in the index until a command needs it
(:meth:`~pymta.mailstore.folder_read.FolderRead.fill_dates`). Only a file
whose name lacks either size (or gives impossible ones) is measured at
once: one ``fstatat`` relative to its open directory, and a read to
count its lines when the size in the name is not the file's.
:meth:`refresh` lists, measures and puts the new files in arrival order
*before* it takes the folder's lock (the mutex and the index's
``flock``): under the lock it only numbers them (records and index lines
made in one pass) and writes the index, reusing that listing when the
directories have not changed since, so deliveries, another process and
other sessions wait for the index write, not for the scan of 100,000
files.

Untrusted input: file names (dot files, odd characters and anything but a
regular file are skipped) and their size hints. May write: the index.
Logs nothing of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Container, Iterable, Iterator
from dataclasses import replace
from operator import itemgetter

from pymta.mailstore.files import measure_at
from pymta.mailstore.folder_base import FolderBase, NewFile
from pymta.mailstore.freshscan import Listing, list_columns
from pymta.mailstore.gcpause import paused
from pymta.mailstore.index import UNKNOWN_DATE, Numbered, message_info, record_fields
from pymta.mailstore.interface import (
    FolderChange,
    MessageInfo,
)
from pymta.mailstore.names import (
    acceptable_match,
    arrival_key,
    filename_sizes,
    letters_to_flags,
    sized_name_match,
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
        """``{base: (sub, name)}`` of the message files in new/ and cur/:
        regular files as the listing's file types say (no ``stat``, but
        on a file system that gives no types)."""
        found: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                entries = os.scandir(os.path.join(self.path, sub))
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if acceptable_match(name) and entry.is_file(follow_symlinks=False):
                        found[name.partition(":")[0]] = (sub, name)
        return found

    def _measure_new(
        self,
        found: dict[str, tuple[str, str]],
        known: Container[str],
        measured: dict[str, NewFile] | None = None,
    ) -> dict[str, NewFile]:
        """The files of ``found`` whose base is not ``known``, in arrival
        order, their sizes from their names; a name without both sizes is
        measured (:func:`measure_at`: one ``fstatat``, unless ``measured``
        has the file under the same name), and left out when gone
        meanwhile or not a regular file. Their dates are unknown (None),
        but for those measured."""
        if not found:
            return {}
        measured = measured or {}
        path = self.path
        dir_fds: dict[str, int] = {}
        sized_name = sized_name_match
        keyed: list[tuple[tuple[int, int, str], str, NewFile]] = []
        try:
            for sub in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError):
                    dir_fds[sub] = os.open(f"{path}/{sub}", os.O_RDONLY | os.O_DIRECTORY)
            for base, (sub, name) in found.items():
                if base in known:
                    continue
                known_file = measured.get(base)
                if known_file is not None and known_file[1] == name and known_file[0] == sub:
                    keyed.append((arrival_key(name), base, known_file))
                    continue
                sized = sized_name(name)
                if sized is not None:
                    # Dovecot's names, and pymta's: no stat (see the module
                    # doc). Sizes no file can have (a CRLF size below the
                    # size, or above twice it) are not taken: measured.
                    secs, usecs, size_field, rfc822_field, marks = sized.groups()
                    size, rfc822 = int(size_field), int(rfc822_field)
                    if size <= rfc822 <= 2 * size:
                        keyed.append(
                            (
                                (int(secs), int(usecs), name),
                                base,
                                (sub, name, f"{sub}/{name}", marks or "", size, rfc822, None),
                            )
                        )
                        continue
                _, sep, info = name.partition(":")
                letters = info[2:] if sep and info.startswith("2,") else ""
                size_hint, rfc822_hint = filename_sizes(base)
                new: NewFile
                if (
                    size_hint is not None
                    and rfc822_hint is not None
                    and size_hint <= rfc822_hint <= 2 * size_hint
                ):
                    new = (sub, name, f"{sub}/{name}", letters, size_hint, rfc822_hint, None)
                else:
                    dir_fd = dir_fds.get(sub)
                    sizes = None if dir_fd is None else measure_at(dir_fd, path, sub, name)
                    if sizes is None:
                        continue  # gone, or not a regular file
                    new = (sub, name, f"{sub}/{name}", letters, *sizes)
                keyed.append((arrival_key(name), base, new))
        finally:
            for fd in dir_fds.values():
                os.close(fd)
        # Arrival order (keys are unique: each holds the file's name).
        keyed.sort(key=itemgetter(0))
        return {base: new for _, base, new in keyed}

    def _prepare_scan(self) -> None:
        """List new/ and cur/ and measure the files the index does not know,
        without the folder's lock (see the module doc); :meth:`_scan_locked`
        takes what is still true of it. Nothing when the directories did
        not change, or when the index must be read first (it exists but
        was not loaded, or another process wrote it since: which files are
        new is known only then)."""
        index = self._index
        known: Container[str]
        if index.loaded:
            if not index.is_current():
                return  # another process wrote the index: it may say it all
            current = self._dir_stat(raw=True)
            if current in (self._dir_stamp, index.scan_stamp):
                return
            known = index.by_base  # looked up only: another thread may add
        elif not index.exists():
            known = ()  # never indexed: every file is new
        else:
            return
        stamp = self._dir_stat()  # taken before listing, as _scan_locked's
        if not known:
            listing = list_columns(self.path)
            if listing is not None:
                self._prepared_listing = (stamp, listing)
                return
        if stamp is None and known:
            # Just changed (a delivery): the scan under the lock could not
            # reuse this listing and would list again; the few new files
            # are measured there.
            return
        found = self._list()
        self._prepared = (stamp, found, self._measure_new(found, known))

    def _scan_locked(
        self, force: bool = False, preassigned: dict[str, int] | None = None
    ) -> list[FolderChange]:
        if not force and self._numbered_under_lock:
            return []  # listed a moment ago, under this lock (folder_base)
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
        listed, self._prepared_listing = self._prepared_listing, None
        if not preassigned and not index.message_count():
            # Nothing to compare with: every file is new (a first scan).
            if listed is not None and listed[0] is not None and listed[0] == stamp:
                listing: Listing | None = listed[1]  # the directories did not change since
            else:
                listing = list_columns(self.path)
            if listing is not None:
                self._prepared = None
                return self._number_listing(listing, stamp)
        prepared, self._prepared = self._prepared, None
        measured: dict[str, NewFile] = {}
        reused = False
        if prepared is not None and prepared[0] is not None and prepared[0] == stamp:
            # Listed (and measured) without the lock, and the directories
            # have not changed since: that listing is this one.
            found = dict(prepared[1])
            measured = prepared[2]
            reused = True
        else:
            if prepared is not None:
                measured = prepared[2]  # the sizes of files still named so hold
            found = self._list()
        missing = [b for b in index.by_base if b not in found]
        if missing:
            # A message renamed (flags changed by another program) between
            # our two listdirs would look gone: look again before expunging.
            found.update(self._list())
            reused = False
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
        new_files: Iterable[NewFile]
        if reused and found.keys() == measured.keys():
            # The common case, a folder's first scan: what is left of the
            # listing is what was measured, already in arrival order.
            new_files = measured.values()
        else:
            # Measured again only if renamed since (or never measured).
            new_files = self._measure_new(found, (), measured).values()
        lines = [index.record_line(i) for i in updates]
        added: list[MessageInfo] = []
        uid = index.uidnext
        taken = set(index.records) if preassigned else ()
        # Per distinct letters: (flags, keywords, the index line's fields).
        marks_of: dict[str, tuple[frozenset[str], frozenset[str], str, str]] = {}
        kw_names = self._kw_names
        make_info = message_info
        for sub, name, filename, letters, size, rfc822, mtime in new_files:
            new_uid = uid
            fresh = True
            if preassigned:
                old_uid = preassigned.get(name.partition(":")[0])
                fresh = old_uid is None or old_uid in taken or old_uid >= index.uidnext
                if not fresh and old_uid is not None:
                    new_uid = old_uid
                assert isinstance(taken, set)
                taken.add(new_uid)
            marks = marks_of.get(letters)
            if marks is None:
                flags, keywords = letters_to_flags(letters, kw_names)
                marks = marks_of[letters] = (flags, keywords, *record_fields(flags, keywords))
            modseq += 1
            added.append(
                make_info(
                    new_uid, size, rfc822, mtime, marks[0], marks[1], modseq, filename, sub == "new"
                )
            )
            date = UNKNOWN_DATE if mtime is None else repr(mtime)
            lines.append(
                f"A\t{new_uid}\t{modseq}\t{filename}\t{size}\t{rfc822}\t{date}\t"
                f"{marks[2]}\t{marks[3]}\n"
            )
            if fresh:
                uid += 1
        if preassigned:
            # messages() lists in UID order
            order = sorted(range(len(added)), key=lambda i: added[i].uid)
            added = [added[i] for i in order]
            lines = lines[: len(updates)] + [lines[len(updates) + i] for i in order]
        index.put(updates + added, expunged, stamp, lines=lines)
        self._dir_stamp = stamp
        notices: list[FolderChange] = []
        if expunged:
            notices.append(FolderChange("expunge", tuple(u for u, _ in expunged), modseq))
        if changed:
            notices.append(FolderChange("flags", tuple(sorted(changed)), modseq))
        if added:
            notices.append(FolderChange("append", tuple(m.uid for m in added), modseq))
        return notices

    def _number_listing(
        self, listing: Listing, stamp: tuple[int, int] | None
    ) -> list[FolderChange]:
        """Number a first scan's files (lock held, the index empty): their
        index lines written by one join and no record made
        (:meth:`~pymta.mailstore.index.UidIndex.put_numbered`)."""
        index = self._index
        self._load_keywords()
        kw_names = self._kw_names
        marks = {letters: letters_to_flags(letters, kw_names) for letters in set(listing.letters)}
        numbered = Numbered(
            in_new=listing.in_new,
            filenames=listing.filenames,
            sizes=listing.sizes,
            rfc822_sizes=listing.rfc822_sizes,
            letters=listing.letters,
            order=listing.order,
            rank=listing.rank,
            first_uid=index.uidnext,
            first_modseq=index.highest_modseq + 1,
            marks=marks,
        )
        index.put_numbered(numbered, stamp)
        self._dir_stamp = stamp
        self._numbered_under_lock = True
        if not listing.filenames:
            return []
        return [FolderChange("append", tuple(numbered.uids), index.highest_modseq)]

    def refresh(self) -> list[MessageInfo]:
        with paused():  # many records made at once (pymta.mailstore.gcpause)
            self._prepare_scan()
            with self._locked() as notices:
                notices.extend(self._scan_locked())
                appended = sorted(u for n in notices if n.kind == "append" for u in n.uids)
                return [self._index.records[u] for u in appended if u in self._index.records]

    def changed_on_disk(self) -> bool:
        if not self._index.loaded or not self._index.is_current():
            return True
        current = self._dir_stat(raw=True)
        return current is None or current != self._dir_stamp
