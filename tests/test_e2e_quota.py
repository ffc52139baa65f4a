"""Quotas end to end: a real twistd pymta, the limit from the passwd-file's
userdb_quota_rule; imaplib's QUOTA commands and APPEND, and an SMTP
delivery over quota deferred by the virtual agent."""

from __future__ import annotations

import imaplib
import smtplib
import time
from pathlib import Path

from tests.harness import DEFAULT_MASTER_CF, IMAP_SERVICE, PymtaServer

PASSWD = (
    "alice@example.test:{PLAIN}alice-pw:::::: userdb_quota_rule=*:bytes=5K\n"
    "bob@example.test:{PLAIN}bob-pw::::::\n"
)


def test_imap_quota_and_delivery_over_quota(tmp_path: Path) -> None:
    """QUOTA is announced; GETQUOTAROOT shows alice's root "" with STORAGE
    in KiB; an APPEND that would not fit is NO [OVERQUOTA]; bob (no rule)
    has no quota root; mail to alice that would not fit is deferred 4.2.2."""
    with PymtaServer(tmp_path, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE, passwd=PASSWD) as server:
        server.start()
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port)
        with imap:
            assert "QUOTA" in imap.capabilities and "QUOTA=RES-STORAGE" in imap.capabilities
            imap.login("alice@example.test", "alice-pw")
            typ, data = imap.getquotaroot("INBOX")
            assert typ == "OK"
            assert data[0] == [b'"INBOX" ""'] and data[1] == [b'"" (STORAGE 0 5)']
            message = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
            typ, _ = imap.append("INBOX", None, imaplib.Time2Internaldate(time.time()), message)
            assert typ == "OK"
            typ, data = imap.append("INBOX", None, imaplib.Time2Internaldate(time.time()), message)
            assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
            typ, data = imap.getquota('""')
            assert typ == "OK" and data[0].startswith(b'"" (STORAGE 2 5)')
            typ, _ = imap.setquota('""', "(STORAGE 100)")
            assert typ == "NO"
        with imaplib.IMAP4("127.0.0.1", server.imap_port) as imap:
            imap.login("bob@example.test", "bob-pw")
            typ, data = imap.getquotaroot("INBOX")
            assert typ == "OK" and data[0] == [b'"INBOX"']
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("bob@example.test", ["alice@example.test"], message)
        server.wait_for_log(
            r"to=<alice@example.test>.*dsn=4\.2\.2, status=deferred \(Quota exceeded"
        )


def test_copy_and_multiappend_over_quota_are_refused(tmp_path: Path) -> None:
    """COPY and MULTIAPPEND count against the quota as APPEND does: copies
    that would not fit are NO [OVERQUOTA] and nothing is copied; a
    MULTIAPPEND whose messages together would not fit stores none of them."""
    from imapclient import IMAPClient

    with PymtaServer(tmp_path, master_cf=DEFAULT_MASTER_CF + IMAP_SERVICE, passwd=PASSWD) as server:
        server.start()
        message = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
        with imaplib.IMAP4("127.0.0.1", server.imap_port) as imap:
            imap.login("alice@example.test", "alice-pw")
            typ, _ = imap.append("INBOX", None, imaplib.Time2Internaldate(time.time()), message)
            assert typ == "OK"
            assert imap.create("Saved")[0] == "OK"
            imap.select("INBOX")
            typ, data = imap.copy("1", "Saved")
            assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
            assert imap.select("Saved")[1] == [b"0"]
        client = IMAPClient("127.0.0.1", port=server.imap_port, ssl=False)
        try:
            client.login("alice@example.test", "alice-pw")
            small = b"Subject: small\r\n\r\n" + b"y" * 1200 + b"\r\n"
            # imapclient hands a NO back as (typ, data) rather than raising.
            typ, data = client.multiappend("Saved", [small, small])
            assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
            assert client.select_folder("Saved")[b"EXISTS"] == 0
        finally:
            client.logout()
