"""The fuzz targets, one module each: ``EXPECTED`` (the module's documented
errors), ``seeds()`` (small inputs taken from the tests) and
``one_input(data)`` (returns, raises an EXPECTED error, or has found a bug)."""

TARGETS = (
    "imap_parser",
    "smtpd",
    "address",
    "mime",
    "queue_file",
    "config_files",
    "pop3",
    "imap_session",
    "maildrop",
    "policy",
    "mailauth",
    "milter_reply",
    "sieve",
    "managesieve",
    "mta_sts",
)
