"""pymta.mailstore: users' mailboxes, shared by delivery, POP3 and IMAP.

Mirrors Dovecot's Maildir storage (see docs/architecture.md). The modules:

- ``interface``: the contract (IMailStore, IUserMailbox, IFolder) and its
  value types (MessageInfo, MimePart, FolderInfo, FolderChange...).
- ``maildir``: MaildirStore and MaildirUserMailbox, Maildir++ on the local
  file system (layout, folders, subscriptions).
- ``maildir_folder``: MaildirFolder, one folder's messages and UIDs.
- ``memory``: MemoryStore, the same contract in memory, for tests.
- ``index``: the per-folder UID index ``pymta-uidlist``.
- ``cache``: the per-folder header and MIME cache ``pymta-cache``.
- ``names``: folder names (mUTF-7 on disk), file names, flag letters.
- ``mime``: MIME structure with byte offsets.
- ``dovecot``: import of Dovecot's ``dovecot-uidlist`` (keeps UIDs).
- ``watch``: FolderWatcher, inotify wake-ups for IDLE.
"""
