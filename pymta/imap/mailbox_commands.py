"""The IMAP commands of the authenticated state: mailboxes as a whole.

SELECT and EXAMINE (RFC 3501 6.3.1-2, with RFC 7162 CONDSTORE and QRESYNC
parameters), CREATE, DELETE, RENAME (with their hierarchy), SUBSCRIBE,
UNSUBSCRIBE, LIST (RFC 5258 basics, RFC 6154 SPECIAL-USE, RFC 3348
CHILDREN), LSUB, STATUS, APPEND (RFC 4315 APPENDUID). Each is a function
``(server, tag, args, uid)`` that the protocol's dispatch table calls.

Untrusted input: the arguments (mailbox names in modified UTF-7, checked
by the store; flags; dates; the APPEND literal). Store errors become NO
with RFC 5530 response codes. Writes: through the mail store only.

Every command here reaches the store through its asynchronous API (the
session's ``folders``) and is answered when it has done
(:func:`pymta.imap.stored.when_stored`): at once when the store answered
at once, else with later commands waiting. (CATENATE's URLs and QRESYNC's
changes are read from the synchronous folder: index reads and one message.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pymta.imap import scan
from pymta.imap.binary_append import encode_binary_parts
from pymta.imap.listing import list_entries
from pymta.imap.objectid import mailbox_id
from pymta.imap.parser import Atom, Literal8, ParseError, Token
from pymta.imap.sequence import SequenceSet, format_set, parse_sequence_set
from pymta.imap.stored import when_stored
from pymta.imap.view import SelectedView
from pymta.imap.wire import (
    EightBitName,
    flag_list,
    mailbox_in,
    mailbox_out,
    parse_date_time,
    string,
    utf8_string,
)
from pymta.mailstore.asyncstore import IAsyncFolder, IAsyncUserMailbox
from pymta.mailstore.interface import (
    SYSTEM_FLAGS,
    FolderExists,
    FolderSummary,
    InvalidFolderName,
    MailStoreError,
    MessageInfo,
    NoSuchFolder,
)
from pymta.mailstore.names import mutf7_encode

if TYPE_CHECKING:
    from pymta.imap.quota import IMAPQuota
    from pymta.imap.session import IMAPSession


class NameRefused(Exception):
    """A well-formed command naming a mailbox the server will not accept:
    answered NO (not BAD), with the exception's text."""


def mailbox_arg(token: Token, utf8: bool = False) -> str:
    """A mailbox name argument as a store name; ParseError when malformed,
    NameRefused when it is 8-bit or not valid mUTF-7 (RFC 3501 5.1.3) unless
    ``utf8`` (IMAP4rev2 enabled: names are UTF-8, RFC 9051 5.1)."""
    if isinstance(token, list):
        raise ParseError("Expected a mailbox name.")
    try:
        return mailbox_in(token if isinstance(token, bytes) else str(token), utf8)
    except EightBitName:
        raise NameRefused("[CANNOT] Mailbox name is not valid mUTF-7") from None
    except (ValueError, UnicodeDecodeError):
        # Well-formed syntax naming no mailbox there can be: NO, as Dovecot.
        raise NameRefused("[CANNOT] Mailbox name is not valid mUTF-7") from None


def _text(token: Token) -> str:
    if isinstance(token, list):
        raise ParseError("Expected a string.")
    return token.decode("utf-8", "replace") if isinstance(token, bytes) else str(token)


def _reason(error: BaseException | None) -> bytes:
    """A store error's text for a NO response (bounded, never raw bytes)."""
    return str(error).encode("utf-8", "replace")[:200]


def _safe(name: str) -> bytes:
    return "".join(c if c.isprintable() else "?" for c in name[:200]).encode("utf-8")


def select(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _select(s, tag, args, readonly=False)


def examine(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _select(s, tag, args, readonly=True)


def _select(s: IMAPSession, tag: bytes, args: list[Token], readonly: bool) -> None:
    if not args or len(args) > 2:
        raise ParseError("SELECT takes a mailbox name and optional parameters.")
    name = mailbox_arg(args[0], s.utf8_names)
    qresync: list[Token] | None = None
    if len(args) == 2:
        params = args[1]
        if not isinstance(params, list):
            raise ParseError("Invalid SELECT parameters.")
        i = 0
        while i < len(params):
            p = params[i]
            word = p.upper() if isinstance(p, Atom) else ""
            if word == "CONDSTORE":
                s.condstore = True
            elif word == "QRESYNC" and i + 1 < len(params) and isinstance(params[i + 1], list):
                if not s.qresync:
                    s.no(tag, b"QRESYNC is not enabled.")
                    return
                qresync = params[i + 1]  # type: ignore[assignment]
                i += 1
            else:
                raise ParseError("Unknown SELECT parameter.")
            i += 1
    resync = _qresync_params(qresync) if qresync is not None else None
    # RFC 3501: a failed SELECT leaves no mailbox selected.
    if s.view is not None and (s.rev2 or s.qresync):
        s.send(b"* OK [CLOSED] Previous mailbox closed.\r\n")  # RFC 9051 7.1, RFC 7162 3.2.11
    s.unselect()
    opening = defer.ensureDeferred(_open_view(s, _folders(s), name, readonly, s.rev2, resync))

    def opened(result: tuple[SelectedView, FolderSummary, list[MessageInfo], list[int]]) -> None:
        if s.lost:  # gone while the store worked: no view keeps listening
            result[0].close()
            return
        _selected(s, tag, *result, resync)

    def refused(failure: Failure) -> None:
        if failure.check(NoSuchFolder):
            s.no(tag, b"[NONEXISTENT] Mailbox doesn't exist: " + _safe(name))
        elif s.store_refused(tag, failure.value):
            return
        elif failure.check(MailStoreError):
            s.log.error(
                "imap({user}): {name}: {error}", user=s.user, name=name, error=failure.value
            )
            s.no(tag, b"[SERVERBUG] Internal error occurred.")
        else:
            failure.raiseException()

    when_stored(s, tag, "SELECT", opening.addCallbacks(opened, refused), _nothing)


@dataclass(frozen=True)
class _Resync:
    """SELECT's QRESYNC parameters (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known: SequenceSet | None


def _qresync_params(params: list[Token]) -> _Resync:
    """(uidvalidity modseq [known-uids]); ParseError (BAD, before anything
    is selected)."""
    if len(params) < 2 or not all(isinstance(p, Atom) and p.isdigit() for p in params[:2]):
        raise ParseError("QRESYNC takes (uidvalidity modseq [known-uids]).")
    known = None
    if len(params) >= 3 and isinstance(params[2], Atom):
        try:
            known = parse_sequence_set(params[2])
        except ValueError:
            raise ParseError("Invalid known-uids.") from None
    return _Resync(int(params[0]), int(params[1]), known)  # type: ignore[arg-type]


async def _open_view(
    s: IMAPSession,
    folders: IAsyncUserMailbox,
    name: str,
    readonly: bool,
    rev2: bool,
    resync: _Resync | None = None,
) -> tuple[SelectedView, FolderSummary, list[MessageInfo], list[int]]:
    """The folder opened for SELECT/EXAMINE through the store's
    asynchronous API: a folder changed on disk (or never indexed) is
    scanned in the store's threads, \\Recent claimed there; its summary
    (no record per message). With QRESYNC of the same UIDVALIDITY, also
    the records and the UIDs expunged since its modseq."""
    face = await folders.folder(name)
    view = SelectedView(readonly, face)
    view.show_recent = not rev2
    try:
        summary = await view.open_async()
        messages: list[MessageInfo] = []
        gone: list[int] = []
        if resync is not None and resync.uidvalidity == summary.uidvalidity:
            messages = await face.messages()
            gone = await face.expunged_since(resync.modseq)
    except BaseException:
        view.close()  # stop listening: nothing selected
        raise
    return view, summary, messages, gone


def _selected(
    s: IMAPSession,
    tag: bytes,
    view: SelectedView,
    summary: FolderSummary,
    messages: list[MessageInfo],
    gone: list[int],
    resync: _Resync | None,
) -> None:
    folder = view.store
    readonly = view.readonly
    if not readonly and not folder.writable:
        # A read-only store (EROFS): readable, and honest about it
        # (RFC 3501 6.3.1: [READ-ONLY] when the mailbox cannot be changed).
        readonly = view.readonly = True
    s.select(view)
    exists = len(summary.uids)
    unseen = summary.first_unseen
    out = [*view.flags_lines(), b"* %d EXISTS\r\n" % exists]
    if not s.rev2:  # RFC 9051 removed RECENT
        out.append(b"* %d RECENT\r\n" % len(view.recent))
    if unseen and not s.rev2:  # RFC 9051 7.1: no UNSEEN response code
        out.append(b"* OK [UNSEEN %d] First unseen.\r\n" % unseen)
    out.append(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % summary.uidvalidity)
    out.append(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % summary.uidnext)
    out.append(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % summary.highest_modseq)
    out.append(b"* OK [MAILBOXID (%s)] Ok\r\n" % mailbox_id(summary.uidvalidity).encode())
    if s.rev2:  # RFC 9051 6.3.2: the name as the server spells it
        out.append(b'* LIST () "/" ' + mailbox_out(folder.name, True) + b"\r\n")
    for line in out:
        s.send(line)
    if resync is not None and resync.uidvalidity == summary.uidvalidity:
        _qresync(s, view, messages, gone, resync)
    code = b"[READ-ONLY]" if readonly else b"[READ-WRITE]"
    s.ok(tag, code + b" Select completed.")
    if exists >= scan.PRESTART_MESSAGES:
        # The dates are asked for now, not a turn later: a command the
        # client sends at once (SORT ARRIVAL) must find the fill ahead of
        # it in the folder's turn (behind the records a first scan did not
        # make), not start one of its own. Asking costs the reactor nothing
        # (the fill plans in the store's threads). The worker processes
        # start two turns later: a SELECT the store answered from a thread
        # ends inside runUntilCurrent, where a callLater(0) still runs
        # before the poll that writes the answer, and starting them took a
        # third of a second there. The fill's worker lanes join once the
        # processes answer.
        _date_after_answer(s, view.store, summary.undated)
        s.clock.callLater(0, scan.prestart, s.scan_in_thread, s.clock)


def _date_after_answer(s: IMAPSession, store: IAsyncFolder, undated: Sequence[int]) -> None:
    """Have the store read the dates a first scan left unknown, once the
    SELECT's answer is out: the folder's next command that shows or
    compares dates (SORT, FETCH INTERNALDATE, SEARCH SINCE) then finds
    them, or waits only for what is left (the folder's calls run one at
    a time), and the records a first scan did not make are made then,
    in the store's threads. A failure is left for that command to meet
    again."""
    if undated:
        # In the scan worker processes (started after this SELECT) and the
        # store's threads together: both cores (pymta.mailstore.datefill).
        store.fill_dates(undated, s.scan_in_thread).addErrback(lambda _: None)


def _qresync(
    s: IMAPSession,
    view: SelectedView,
    messages: list[MessageInfo],
    gone: list[int],
    resync: _Resync,
) -> None:
    """RFC 7162 3.2.5: VANISHED (EARLIER) and changed flags since the client's modseq."""
    known, modseq = resync.known, resync.modseq
    if known is not None:
        largest = max(gone[-1] if gone else 0, view.uids[-1] if view.uids else 0)
        gone = [u for u in gone if known.contains(u, largest)]
    if gone:
        s.send(b"* VANISHED (EARLIER) " + format_set(gone).encode() + b"\r\n")
    for n, m in enumerate(messages, 1):
        if m.modseq > modseq and view.msn(m.uid) is not None:
            s.send(
                b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n"
                % (view.msn(m.uid) or n, m.uid, flag_list(view.flags_of(m)), m.modseq)
            )


def create(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) not in (1, 2):
        raise ParseError("CREATE takes a mailbox name.")
    name = mailbox_arg(args[0], s.utf8_names)
    use = None
    if len(args) == 2:  # RFC 6154 CREATE-SPECIAL-USE: (USE (\Sent))
        opts = args[1]
        if isinstance(opts, list) and len(opts) == 2 and isinstance(opts[1], list):
            uses = [str(u) for u in opts[1] if isinstance(u, Atom)]
            use = uses[0] if uses else None
    creating = _folders(s).create_folder(name.rstrip("/"), use)
    _folder_change(s, tag, "CREATE", creating, name, b"Create completed.")


def delete(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 1:
        raise ParseError("DELETE takes a mailbox name.")
    name = mailbox_arg(args[0], s.utf8_names)
    if s.view is not None and s.view.store.name == name:
        s.unselect()
    deleting = _folders(s).delete_folder(name)
    _folder_change(s, tag, "DELETE", deleting, name, b"Delete completed.")


def rename(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 2:
        raise ParseError("RENAME takes two mailbox names.")
    old, new = mailbox_arg(args[0], s.utf8_names), mailbox_arg(args[1], s.utf8_names)
    renaming = _folders(s).rename_folder(old, new.rstrip("/"))
    _folder_change(s, tag, "RENAME", renaming, old, b"Rename completed.")


def _folders(s: IMAPSession) -> IAsyncUserMailbox:
    """The logged-in user's folders through the store's asynchronous API."""
    assert s.folders is not None
    return s.folders


def _folder_change(
    s: IMAPSession, tag: bytes, command: str, d: Deferred[Any], name: str, done: bytes
) -> None:
    """Answer CREATE, DELETE or RENAME when the store has made the change
    (folder changes run in the store's threads: directories, renames,
    fsyncs): OK, or NO with the RFC 5530 code of the store's error."""

    def refused(failure: Failure) -> None:
        error = failure.value
        if failure.check(NoSuchFolder):
            s.no(tag, b"[NONEXISTENT] Mailbox doesn't exist: " + _safe(name))
        elif failure.check(FolderExists):
            target = b"Target mailbox" if command == "RENAME" else b"Mailbox"
            s.no(tag, b"[ALREADYEXISTS] " + target + b" already exists")
        elif failure.check(InvalidFolderName):
            s.no(tag, b"[CANNOT] " + _reason(error))
        elif failure.check(MailStoreError):
            if not s.store_refused(tag, error):
                s.no(tag, b"[SERVERBUG] " + _reason(error))
        else:
            failure.raiseException()

    answered = d.addCallbacks(lambda _: s.ok(tag, done), refused)
    when_stored(s, tag, command, answered, _nothing)


def _nothing(_: object) -> None:
    """The answer was sent by the Deferred's own callbacks."""


def subscribe(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _subscription(s, tag, args, "SUBSCRIBE", subscribe=True)


def unsubscribe(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    _subscription(s, tag, args, "UNSUBSCRIBE", subscribe=False)


def _subscription(
    s: IMAPSession, tag: bytes, args: list[Token], command: str, subscribe: bool
) -> None:
    if len(args) != 1:
        raise ParseError(f"{command} takes a mailbox name.")
    folders = _folders(s)
    change = folders.subscribe if subscribe else folders.unsubscribe
    # The subscriptions file is rewritten and synced: the store's threads.
    changing: Deferred[None] = change(mailbox_arg(args[0], s.utf8_names))

    def refused(failure: Failure) -> None:
        failure.trap(MailStoreError)
        s.no(tag, b"[CANNOT] " + _reason(failure.value))

    done = command.capitalize().encode() + b" completed."
    answered = changing.addCallbacks(lambda _: s.ok(tag, done), refused)
    when_stored(s, tag, command, answered, _nothing)


def _patterns(token: Token) -> list[str]:
    if isinstance(token, list):
        return [_text(t) for t in token]
    return [_text(token)]


def _return_options(token: Token) -> tuple[list[str], list[str] | None]:
    """LIST's RETURN options (RFC 5258): the atoms, and RFC 5819's
    ``STATUS (items)`` (None when not asked)."""
    if not isinstance(token, list):
        raise ParseError("RETURN takes a list.")
    returns: list[str] = []
    status_items: list[str] | None = None
    i = 0
    while i < len(token):
        option = token[i]
        if not isinstance(option, Atom):
            raise ParseError("Invalid RETURN option.")
        word = option.upper()
        if word == "STATUS":
            if i + 1 >= len(token):
                raise ParseError("RETURN STATUS takes a list of items.")
            status_items = _status_items(token[i + 1])
            i += 1
        elif word in _RETURN_OPTIONS:
            returns.append(word)
        else:
            raise ParseError("Unknown LIST return option.")
        i += 1
    return returns, status_items


#: LIST selection options (RFC 5258 3.1, RFC 6154) and RETURN options we know.
_SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})


def _selection_options(token: list[Token]) -> list[str]:
    """LIST's selection options; BAD for one unknown (RFC 5258 3: the server
    MUST reject it) and for RECURSIVEMATCH with no option it modifies."""
    words: list[str] = []
    for option in token:
        if not isinstance(option, Atom) or option.upper() not in _SELECTION_OPTIONS:
            raise ParseError("Unknown LIST selection option.")
        words.append(option.upper())
    if "RECURSIVEMATCH" in words and not set(words) - {"RECURSIVEMATCH", "REMOTE"}:
        raise ParseError("RECURSIVEMATCH needs another selection option.")
    return words


def _name_encoder(s: IMAPSession) -> Callable[[str], str]:
    """Store name -> LIST name: mUTF-7, or the name itself once IMAP4rev2
    is enabled."""
    return _same if s.utf8_names else mutf7_encode


def _same(name: str) -> str:
    return name


def _wire_name(s: IMAPSession, name: str) -> bytes:
    """A LIST name as sent: mUTF-7, or UTF-8 once IMAP4rev2 is enabled."""
    if s.utf8_names:
        return utf8_string(name)
    return string(name.encode("ascii", "replace"))


def list_(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    assert s.mailbox is not None
    args = list(args)
    selection: list[str] = []
    extended = s.rev2  # RFC 9051 LIST is LIST-EXTENDED
    if args and isinstance(args[0], list):
        selection = _selection_options(args[0])
        extended = True
        args = args[1:]
    returns: list[str] = []
    status_items: list[str] | None = None
    if len(args) == 4 and isinstance(args[2], Atom) and args[2].upper() == "RETURN":
        returns, status_items = _return_options(args[3])
        extended = True
        args = args[:2]
    if len(args) != 2:
        raise ParseError("LIST takes a reference and a pattern.")
    reference = _text(args[0])
    patterns = _patterns(args[1])
    if patterns == [""]:
        s.send(b'* LIST (\\Noselect) "/" ""\r\n')
        s.ok(tag, b"List completed.")
        return
    subscribed_only = "SUBSCRIBED" in selection
    return_subscribed = "SUBSCRIBED" in returns or subscribed_only
    listing = defer.ensureDeferred(
        _list_lines(
            s,
            _folders(s),
            reference,
            patterns,
            selection,
            subscribed=subscribed_only or return_subscribed,
            return_subscribed=return_subscribed,
            extended=extended,
            status_items=status_items,
        )
    )
    when_stored(s, tag, "LIST", listing, lambda lines: _listed(s, tag, lines, b"List completed."))


def _listed(s: IMAPSession, tag: bytes, lines: list[bytes], done: bytes) -> None:
    for line in lines:
        s.send(line)
    s.ok(tag, done)


async def _list_lines(
    s: IMAPSession,
    folders_api: IAsyncUserMailbox,
    reference: str,
    patterns: list[str],
    selection: list[str],
    *,
    subscribed: bool,
    return_subscribed: bool,
    extended: bool,
    status_items: list[str] | None,
) -> list[bytes]:
    """LIST's untagged answers, from the store's folder list and
    subscriptions (and, for RFC 5819 LIST-STATUS, each listed folder's
    status): the store's calls run in its threads where it has them."""
    folders = await folders_api.list_folders()
    subs = await folders_api.subscriptions() if subscribed else []
    if "SPECIAL-USE" in selection:
        folders = [f for f in folders if f.special_use]
    encode = _name_encoder(s)
    entries = list_entries(
        folders,
        subs,
        reference,
        patterns,
        subscribed_only="SUBSCRIBED" in selection,
        return_subscribed=return_subscribed,
        extended=extended,
        encode=encode,
        nonexistent=s.rev2,
        recursive="RECURSIVEMATCH" in selection,
    )
    store_names = {encode(f.name): f.name for f in folders}
    lines: list[bytes] = []
    for e in entries:
        wire = _wire_name(s, e.wire_name)
        extra = b' ("CHILDINFO" ("SUBSCRIBED"))' if e.childinfo else b""
        lines.append(b"* LIST " + flag_list(e.attributes) + b' "/" ' + wire + extra + b"\r\n")
        store_name = store_names.get(e.wire_name)
        if status_items is not None and store_name is not None:
            # RFC 5819: a STATUS for each selectable mailbox listed, right after it.
            try:
                folder = await folders_api.folder(store_name)
                values = await _status_values(folder, status_items)
            except MailStoreError:
                continue
            lines.append(b"* STATUS " + wire + b" (" + values + b")\r\n")
    return lines


def lsub(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 2:
        raise ParseError("LSUB takes a reference and a pattern.")
    reference, patterns = _text(args[0]), _patterns(args[1])
    listing = defer.ensureDeferred(_lsub_lines(s, _folders(s), reference, patterns))
    when_stored(s, tag, "LSUB", listing, lambda lines: _listed(s, tag, lines, b"Lsub completed."))


async def _lsub_lines(
    s: IMAPSession, folders_api: IAsyncUserMailbox, reference: str, patterns: list[str]
) -> list[bytes]:
    """LSUB's untagged answers, from the store's folder list and subscriptions."""
    folders = await folders_api.list_folders()
    subs = await folders_api.subscriptions()
    entries = list_entries(
        folders, subs, reference, patterns, subscribed_only=True, encode=_name_encoder(s)
    )
    return [
        b"* LSUB " + flag_list(e.attributes) + b' "/" ' + _wire_name(s, e.wire_name) + b"\r\n"
        for e in entries
    ]


_STATUS_ITEMS = (
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",  # RFC 8438, RFC 9051
    "DELETED",  # RFC 9051
    "MAILBOXID",  # RFC 8474
)


def _status_items(token: Token) -> list[str]:
    if not isinstance(token, list) or not token:
        raise ParseError("STATUS takes a list of items.")
    items = []
    for t in token:
        if not isinstance(t, Atom) or t.upper() not in _STATUS_ITEMS:
            raise ParseError("Unknown STATUS item.")
        items.append(t.upper())
    return items


async def _status_values(folder: IAsyncFolder, items: list[str]) -> bytes:
    """``MESSAGES 3 UNSEEN 1 ...`` for STATUS and LIST-STATUS, from the index
    (a folder changed on disk is scanned first: in the store's threads)."""
    if await folder.changed_on_disk():
        await folder.rescan()  # no record made for nothing (a first scan makes none)
    st = await folder.status()
    values = {
        "MESSAGES": st.messages,
        "RECENT": st.recent,
        "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen,
        "HIGHESTMODSEQ": st.highest_modseq,
        "SIZE": st.size,
        "MAILBOXID": f"({mailbox_id(st.uidvalidity)})",
    }
    if "DELETED" in items:
        values["DELETED"] = sum(1 for m in await folder.messages() if "\\Deleted" in m.flags)
    return " ".join(f"{i} {values[i]}" for i in items).encode("ascii")


def status(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) != 2:
        raise ParseError("STATUS takes a mailbox name and a list of items.")
    name = mailbox_arg(args[0], s.utf8_names)
    items = _status_items(args[1])
    if s.rev2 and "RECENT" in items:
        raise ParseError("RECENT is not an IMAP4rev2 STATUS item.")
    asking = defer.ensureDeferred(_status_line(s, _folders(s), name, items))

    def refused(failure: Failure) -> None:
        if failure.check(NoSuchFolder):
            s.no(tag, b"[NONEXISTENT] Mailbox doesn't exist: " + _safe(name))
            return
        if failure.check(MailStoreError) and not s.store_refused(tag, failure.value):
            s.log.error(
                "imap({user}): {name}: {error}", user=s.user, name=name, error=failure.value
            )
            s.no(tag, b"[SERVERBUG] Internal error occurred.")
            return
        failure.raiseException()

    def answer(line: bytes) -> None:
        _listed(s, tag, [line], b"Status completed.")

    answered = asking.addCallbacks(answer, refused)
    when_stored(s, tag, "STATUS", answered, _nothing)


async def _status_line(
    s: IMAPSession, folders_api: IAsyncUserMailbox, name: str, items: list[str]
) -> bytes:
    folder = await folders_api.folder(name)
    values = await _status_values(folder, items)
    return b"* STATUS " + mailbox_out(folder.name, s.utf8_names) + b" (" + values + b")\r\n"


def append(s: IMAPSession, tag: bytes, args: list[Token], uid: bool) -> None:
    if len(args) < 2 or len(args) > 4:
        raise ParseError("APPEND takes a mailbox, optional flags and date, and a message.")
    name = mailbox_arg(args[0], s.utf8_names)
    message = args[-1]
    if not isinstance(message, bytes):
        raise ParseError("APPEND needs the message as a literal.")
    flags: list[str] = []
    date: float | None = None
    for extra in args[1:-1]:
        if isinstance(extra, list):
            for f in extra:
                if not isinstance(f, Atom):
                    raise ParseError("Invalid flag.")
                flags.append(_flag_name(f))
        elif isinstance(extra, bytes):
            try:
                date = parse_date_time(extra.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                raise ParseError("Invalid date-time.") from None
        else:
            raise ParseError("Invalid APPEND argument.")
    if not message:
        s.no(tag, b"Can't save a zero byte message.")
        return
    store_messages(s, tag, name, [(message, flags, date)])


#: The messages of an APPEND: bytes, flags, internal date.
Contents = list[tuple[bytes, list[str], "float | None"]]


class Answered(Exception):
    """Raised by an APPEND's contents builder that has answered the
    command itself (CATENATE's NO [BADURL], [TOOBIG]...)."""


def store_messages(
    s: IMAPSession,
    tag: bytes,
    name: str,
    contents: Contents | Callable[[], Awaitable[Contents]],
) -> None:
    """Store the messages of an APPEND (one, or MULTIAPPEND's several: all
    or none) in folder ``name`` through the store's asynchronous API, then
    answer ``OK [APPENDUID v uids]``, ``NO [TRYCREATE]`` for a folder that
    is not there (first), or the store's error. ``contents`` may be an
    async function that builds them once the folder is known to exist
    (CATENATE, reading its URLs through the store's asynchronous API),
    answering and raising :class:`Answered` when it cannot. The writes and
    fsyncs run in the store's threads; later commands wait meanwhile."""
    storing = defer.ensureDeferred(_store_messages(s, _folders(s), contents, name))

    def stored(result: tuple[int, list[int]] | None) -> None:
        if result is None:
            s.no(tag, b"[TRYCREATE] Mailbox doesn't exist: " + _safe(name))
            return
        uidvalidity, uids = result
        code = b"[APPENDUID %d %s]" % (uidvalidity, format_set(uids).encode("ascii"))
        s.ok(tag, code + b" Append completed.")

    def refused(failure: Failure) -> None:
        if failure.check(Answered) or s.store_refused(tag, failure.value):
            return  # a full or read-only store: answered, not a fault
        if failure.check(MailStoreError):
            _append_failed(s, tag, name, failure.value)
            return
        s.log.failure(
            "imap({user}): APPEND to {name}", failure, user=s.user, name=name, command="APPEND"
        )
        s.no(tag, b"[SERVERBUG] Internal error occurred.")

    when_stored(s, tag, "APPEND", storing.addCallbacks(stored, refused), _nothing)


async def _store_messages(
    s: IMAPSession,
    folders: IAsyncUserMailbox,
    wanted: Contents | Callable[[], Awaitable[Contents]],
    name: str,
) -> tuple[int, list[int]] | None:
    """The target's UIDVALIDITY and the new UIDs; None when there is no
    such folder."""
    try:
        target = await folders.folder(name)
    except NoSuchFolder:
        return None
    contents = await wanted() if callable(wanted) else wanted
    # QUOTA: all the messages together must fit (checked where they are
    # written: OSError(EDQUOT) answers NO [OVERQUOTA]).
    guard = session_guard(s, sum(len(content) for content, _, _ in contents))
    prepared: Contents = contents
    if guard is not None or any(isinstance(c, Literal8) for c, _, _ in contents):

        def prepare() -> Contents:
            # The quota's files and the MIME parse of a literal8: not on the
            # reactor thread.
            if guard is not None:
                guard()
            return [(_storable(c), flags, date) for c, flags, date in contents]

        run = s.run_in_thread
        prepared = await run(prepare) if run is not None else prepare()
    if len(prepared) == 1:
        uids = [await target.append(*prepared[0])]
    else:
        uids = await target.append_many(prepared)
    status = await target.status()
    return status.uidvalidity, uids


def session_guard(s: IMAPSession, size: int) -> Callable[[], None] | None:
    """The quota check for ``size`` more bytes in this session's mailbox
    (APPEND, MULTIAPPEND, CATENATE, COPY), or None without quotas."""
    quota: IMAPQuota | None = s.quota
    root: str | None = s.mailbox.root if s.mailbox is not None else None
    if quota is None or not root:
        return None
    return quota.guard(s.user, root, size)


def _storable(message: bytes) -> bytes:
    """The bytes to store for an APPEND: a literal8's binary parts as base64
    (RFC 3516 4.4; pymta.imap.binary_append). Parses MIME: run in the
    worker thread where there is one."""
    return encode_binary_parts(message) if isinstance(message, Literal8) else message


def _append_failed(s: IMAPSession, tag: bytes, name: str, error: object) -> None:
    if isinstance(error, BaseException) and s.store_refused(tag, error):
        return
    s.log.error("imap({user}): APPEND to {name}: {error}", user=s.user, name=name, error=error)
    s.no(tag, b"[SERVERBUG] Internal error occurred.")


def _flag_name(token: str) -> str:
    """A flag as the store names it: system flags capitalised, \\Recent refused."""
    for system in SYSTEM_FLAGS:
        if token.lower() == system.lower():
            return system
    if token.startswith("\\"):
        raise ParseError(f"Invalid system flag {token[:30]!r}.")
    return token
