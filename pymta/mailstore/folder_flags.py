"""folder_flags: change a Maildir folder's flags and keywords; claim \\Recent.

Mirrors Dovecot's maildir flag handling: flags are the ``:2,`` letters of
the file name (:mod:`pymta.mailstore.names`), keywords letters named by
``dovecot-keywords`` (:mod:`pymta.mailstore.keywords`; a keyword without a
letter lives in the index only); a change renames the file into ``cur/``
and raises the folder's HIGHESTMODSEQ (RFC 7162). Claiming \\Recent moves
files from ``new/`` to ``cur/``, as Dovecot does on SELECT and POP3 login.

Untrusted input: flag names from clients (split and checked by
:func:`pymta.mailstore.names.split_flags`). May write: file renames, the
index, ``dovecot-keywords``. Logs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from pymta.mailstore.folder_read import FolderRead
from pymta.mailstore.index import (
    message_info,
)
from pymta.mailstore.interface import (
    WRITE_ERRNOS,
    FlagMode,
    FolderChange,
    MessageInfo,
    NoSuchMessage,
)
from pymta.mailstore.names import (
    flags_to_letters,
    split_flags,
)


class FolderFlags(FolderRead):
    """The flag layer of a Maildir folder (see the module doc)."""

    def _rename_to(self, info: MessageInfo, letters: str) -> str:
        """Move a message's file into cur/ with these flag letters; returns
        the new ``cur/...`` name. FileNotFoundError when it is gone."""
        # filename is "new/..." or "cur/..." (the index refuses anything else)
        target = f"cur/{info.filename[4:].partition(':')[0]}:2,{letters}"
        if target != info.filename:
            os.rename(f"{self.path}/{info.filename}", f"{self.path}/{target}")
        return target

    def _flagged_locked(
        self,
        info: MessageInfo,
        system: frozenset[str],
        keywords: frozenset[str],
        mode: FlagMode,
        modseq: int,
        notices: list[FolderChange],
    ) -> MessageInfo | None:
        """The message with its flags changed and its file renamed (lock
        held, inside _own_change), or None when nothing changes. Follows a
        rename by another program; NoSuchMessage when the file is gone."""
        if mode is FlagMode.REPLACE:
            new_flags, new_kw = system, keywords
        elif mode is FlagMode.ADD:
            new_flags, new_kw = info.flags | system, info.keywords | keywords
        else:
            new_flags, new_kw = info.flags - system, info.keywords - keywords
        if new_flags == info.flags and new_kw == info.keywords:
            return None
        if new_kw:
            self._letters_for(new_kw)
        letters = flags_to_letters(new_flags, new_kw, self._kw_letters)
        try:
            filename = self._rename_to(info, letters)
        except FileNotFoundError:
            notices.extend(self._scan_locked(force=True))
            uid = info.uid
            if uid not in self._index.records:
                raise NoSuchMessage(f"{self.name}: UID {uid} is gone") from None
            info = self._index.records[uid]
            filename = self._rename_to(info, letters)
        return message_info(
            info.uid,
            info.size,
            info.rfc822_size,
            info.internal_date,
            new_flags,
            new_kw,
            modseq,
            filename,
            False,
        )

    def set_flags(
        self,
        uid: int,
        flags: Collection[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> MessageInfo | None:
        system, keywords = split_flags(flags)
        with self._locked() as notices:
            info = self._index.records.get(uid)
            if info is None:
                raise NoSuchMessage(f"{self.name}: no UID {uid}")
            if unchanged_since is not None and info.modseq > unchanged_since:
                return None
            modseq = self._index.highest_modseq + 1
            with self._own_change():
                changed = self._flagged_locked(info, system, keywords, mode, modseq, notices)
            if changed is None:
                return info
            self._index.put([changed], [], self._dir_stamp)
            notices.append(FolderChange("flags", (uid,), modseq))
            return changed

    def set_flags_many(
        self, uids: Collection[int], flags: Collection[str], mode: FlagMode
    ) -> list[MessageInfo]:
        # One lock, one directory check and one index append for all: a POP3
        # QUIT marking 200 messages \Seen costs 200 renames and little more.
        system, keywords = split_flags(flags)
        with self._locked() as notices:
            modseq = self._index.highest_modseq + 1
            records = self._index.records
            out: list[MessageInfo] = []
            changed: list[MessageInfo] = []
            with self._own_change():
                for uid in sorted(set(uids)):
                    info = records.get(uid)
                    if info is None:
                        continue
                    try:
                        new = self._flagged_locked(info, system, keywords, mode, modseq, notices)
                    except NoSuchMessage:
                        continue
                    if new is None:
                        out.append(info)
                    else:
                        out.append(new)
                        changed.append(new)
            if changed:
                self._index.put(changed, [], self._dir_stamp)
                notices.append(FolderChange("flags", tuple(i.uid for i in changed), modseq))
            return out

    def claim_recent(self, uids: Collection[int] | None = None) -> list[int]:
        with self._locked() as notices:
            notices.extend(self._scan_locked())
            records = self._index.records
            if uids is None:
                candidates = list(records.values())
            else:
                candidates = [records[u] for u in sorted(set(uids)) if u in records]
            updates: list[MessageInfo] = []
            with self._own_change():
                for info in candidates:
                    if not info.recent:
                        continue
                    letters = flags_to_letters(info.flags, info.keywords, self._kw_letters)
                    try:
                        filename = self._rename_to(info, letters)
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        if e.errno not in WRITE_ERRNOS:
                            raise
                        # A store that cannot be written: the rest stay in
                        # new/ (and \Recent); reading goes on.
                        break
                    updates.append(
                        message_info(
                            info.uid,
                            info.size,
                            info.rfc822_size,
                            info.internal_date,
                            info.flags,
                            info.keywords,
                            info.modseq,
                            filename,
                            False,
                        )
                    )
            self._index.put(updates, [], self._dir_stamp)
            return [i.uid for i in updates]
