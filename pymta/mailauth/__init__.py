"""mailauth: SPF, DKIM and DMARC checks of inbound mail, DKIM signing of outbound mail.

Part of cleanup(8) in pymta (Postfix leaves this to milters such as
OpenDKIM and OpenDMARC). The pieces:

- :mod:`pymta.mailauth.service` — the step cleanup runs: which mail is
  verified, which is signed, in the thread pool with bounded concurrency;
- :mod:`pymta.mailauth.spfcheck` — SPF (RFC 7208) through pyspf;
- :mod:`pymta.mailauth.dkimcheck` — DKIM (RFC 6376, RFC 8463) through dkimpy;
- :mod:`pymta.mailauth.dmarc` — DMARC (RFC 7489) with publicsuffixlist;
- :mod:`pymta.mailauth.authresults` — the Authentication-Results header
  (RFC 8601), forged ones removed;
- :mod:`pymta.mailauth.keytable` — OpenDKIM's KeyTable and SigningTable;
- :mod:`pymta.mailauth.keys` — key files, generation, the DNS record;
- :mod:`pymta.mailauth.resolver` — the blocking DNS lookups of the
  libraries (dnspython at ``pymta_dns_servers``, or in memory).

Libraries (lower bounds in setup.cfg): dkimpy >= 1.1 and pynacl (ed25519),
pyspf >= 2.0.14, dnspython >= 2.6, publicsuffixlist >= 1.0 — each
maintained and the de-facto Python implementation of its standard.
authheaders was not used: it wraps the same dkimpy/pyspf and resolves
DMARC through its own DNS calls, which pymta could not point at its
configured servers or bound by its timeout.
"""
