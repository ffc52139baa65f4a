"""pymta.mailstore: users' mailboxes, shared by delivery, POP3 and IMAP.

Mirrors Dovecot's Maildir storage (see docs/architecture.md). The modules:

- ``interface``: the contract (IMailStore, IUserMailbox, IFolder) and its
  value types (MessageInfo, MimePart, FolderInfo, FolderChange...).
- ``maildir``: MaildirStore and MaildirUserMailbox, Maildir++ on the local
  file system (layout, folders, subscriptions).
- ``maildir_folder``: MaildirFolder, one folder's messages and UIDs, built
  from layers split by job as Dovecot splits its Maildir code:
  ``folder_base`` (state, ``_locked()``, the index), ``folder_scan`` (sync
  with what other programs did), ``folder_read`` (messages, headers,
  structures), ``folder_flags`` (flags, keywords, \\Recent) and
  ``folder_save`` (append, copy, expunge).
- ``save``: the one Maildir writer (tmp/, durable, rename), used by
  deliveries, APPEND and COPY alike; ``files``: safe file reads and writes;
  ``keywords``: ``dovecot-keywords``.
- ``deliver``: MaildirDelivery, the store's delivery API (a queued message
  into a folder with flags and keywords, group-committed, quota hook).
- ``memory``: MemoryStore, the same contract in memory, for tests.
- ``asyncstore``: the same contract with Deferred results
  (``store.asynchronous()``), run in the Maildir store's own threads.
- ``index``: the per-folder UID index ``pymta-uidlist``.
- ``cache``: the per-folder header and MIME cache ``pymta-cache``.
- ``names``: folder names (mUTF-7 on disk), file names (one naming
  scheme), flag letters.
- ``mime``: MIME structure with byte offsets.
- ``dovecot``: import of Dovecot's ``dovecot-uidlist`` (keeps UIDs).
- ``watch``: FolderWatcher, inotify wake-ups for IDLE; ``watchers``: the
  Maildir store's pool of them (one per watched folder, shared by its
  sessions, on one inotify descriptor) behind the asynchronous API's
  ``watch()``.
- ``metadata``: a user's METADATA entries (RFC 5464) in the Maildir root.
- ``prefetch``: the store's reads of many uncached headers (SEARCH, SORT)
  in its threads; ``filescan``: a scan of whole messages (SEARCH BODY)
  where the store reads them, in the caller's worker processes.
"""
