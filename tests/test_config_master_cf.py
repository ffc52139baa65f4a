"""master.cf parsing, listen addresses, the command table and check_master."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from pymta.config.errors import ConfigError
from pymta.config.master_cf import (
    COMMANDS,
    PARTS,
    MasterService,
    check_master,
    format_service,
    load_master,
    parse_master_cf,
)

# Debian's stock /etc/postfix/master.cf (postfix 3.7), verbatim.
STOCK_MASTER_CF = r"""#
# Postfix master process configuration file.  For details on the format
# of the file, see the master(5) manual page (command: "man 5 master" or
# on-line: http://www.postfix.org/master.5.html).
#
# Do not forget to execute "postfix reload" after editing this file.
#
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
smtp      inet  n       -       y       -       -       smtpd
#smtp      inet  n       -       y       -       1       postscreen
#smtpd     pass  -       -       y       -       -       smtpd
#dnsblog   unix  -       -       y       -       0       dnsblog
#tlsproxy  unix  -       -       y       -       0       tlsproxy
# Choose one: enable submission for loopback clients only, or for any client.
#127.0.0.1:submission inet n -   y       -       -       smtpd
#submission inet n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submission
#  -o smtpd_tls_security_level=encrypt
#  -o smtpd_sasl_auth_enable=yes
#  -o smtpd_tls_auth_only=yes
#  -o smtpd_reject_unlisted_recipient=no
#     Instead of specifying complex smtpd_<xxx>_restrictions here,
#     specify "smtpd_<xxx>_restrictions=$mua_<xxx>_restrictions"
#     here, and specify mua_<xxx>_restrictions in main.cf (where
#     "<xxx>" is "client", "helo", "sender", "relay", or "recipient").
#  -o smtpd_client_restrictions=
#  -o smtpd_helo_restrictions=
#  -o smtpd_sender_restrictions=
#  -o smtpd_relay_restrictions=
#  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
#  -o milter_macro_daemon_name=ORIGINATING
# Choose one: enable submissions for loopback clients only, or for any client.
#127.0.0.1:submissions inet n  -       y       -       -       smtpd
#submissions     inet  n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submissions
#  -o smtpd_tls_wrappermode=yes
#  -o smtpd_sasl_auth_enable=yes
#  -o smtpd_reject_unlisted_recipient=no
#     Instead of specifying complex smtpd_<xxx>_restrictions here,
#     specify "smtpd_<xxx>_restrictions=$mua_<xxx>_restrictions"
#     here, and specify mua_<xxx>_restrictions in main.cf (where
#     "<xxx>" is "client", "helo", "sender", "relay", or "recipient").
#  -o smtpd_client_restrictions=
#  -o smtpd_helo_restrictions=
#  -o smtpd_sender_restrictions=
#  -o smtpd_relay_restrictions=
#  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
#  -o milter_macro_daemon_name=ORIGINATING
#628       inet  n       -       y       -       -       qmqpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
#qmgr     unix  n       -       n       300     1       oqmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
#       -o smtp_helo_timeout=5 -o smtp_connect_timeout=5
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       y       -       -       lmtp
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
#
# ====================================================================
# Interfaces to non-Postfix software. Be sure to examine the manual
# pages of the non-Postfix software to find out what options it wants.
#
# Many of the following services use the Postfix pipe(8) delivery
# agent.  See the pipe(8) man page for information about ${recipient}
# and other message envelope options.
# ====================================================================
#
# maildrop. See the Postfix MAILDROP_README file for details.
# Also specify in main.cf: maildrop_destination_recipient_limit=1
#
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
#
# ====================================================================
#
# Recent Cyrus versions can use the existing "lmtp" master.cf entry.
#
# Specify in cyrus.conf:
#   lmtp    cmd="lmtpd -a" listen="localhost:lmtp" proto=tcp4
#
# Specify in main.cf one or more of the following:
#  mailbox_transport = lmtp:inet:localhost
#  virtual_transport = lmtp:inet:localhost
#
# ====================================================================
#
# Cyrus 2.1.5 (Amos Gouaux)
# Also specify in main.cf: cyrus_destination_recipient_limit=1
#
#cyrus     unix  -       n       n       -       -       pipe
#  flags=DRX user=cyrus argv=/cyrus/bin/deliver -e -r ${sender} -m ${extension} ${user}
#
# ====================================================================
# Old example of delivery via Cyrus.
#
#old-cyrus unix  -       n       n       -       -       pipe
#  flags=R user=cyrus argv=/cyrus/bin/deliver -e -m ${extension} ${user}
#
# ====================================================================
#
# See the Postfix UUCP_README file for configuration details.
#
uucp      unix  -       n       n       -       -       pipe
  flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
#
# Other external delivery methods.
#
ifmail    unix  -       n       n       -       -       pipe
  flags=F user=ftn argv=/usr/lib/ifmail/ifmail -r $nexthop ($recipient)
bsmtp     unix  -       n       n       -       -       pipe
  flags=Fq. user=bsmtp argv=/usr/lib/bsmtp/bsmtp -t$nexthop -f$sender $recipient
scalemail-backend unix -       n       n       -       2       pipe
  flags=R user=scalemail argv=/usr/lib/scalemail/bin/scalemail-store ${nexthop} ${user} ${extension}
mailman   unix  -       n       n       -       -       pipe
  flags=FRX user=list argv=/usr/lib/mailman/bin/postfix-to-mailman.py ${nexthop} ${user}
"""

# What Postfix 3.7's ``postconf -M`` prints for STOCK_MASTER_CF.
STOCK_POSTCONF_M = r"""smtp       inet  n       -       y       -       -       smtpd
pickup     unix  n       -       y       60      1       pickup
cleanup    unix  n       -       y       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       y       1000?   1       tlsmgr
rewrite    unix  -       -       y       -       -       trivial-rewrite
bounce     unix  -       -       y       -       0       bounce
defer      unix  -       -       y       -       0       bounce
trace      unix  -       -       y       -       0       bounce
verify     unix  -       -       y       -       1       verify
flush      unix  n       -       y       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       y       -       -       smtp
relay      unix  -       -       y       -       -       smtp -o syslog_name=postfix/$service_name
showq      unix  n       -       y       -       -       showq
error      unix  -       -       y       -       -       error
retry      unix  -       -       y       -       -       error
discard    unix  -       -       y       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       y       -       -       lmtp
anvil      unix  -       -       y       -       1       anvil
scache     unix  -       -       y       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
maildrop   unix  -       n       n       -       -       pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
uucp       unix  -       n       n       -       -       pipe flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
ifmail     unix  -       n       n       -       -       pipe flags=F user=ftn argv=/usr/lib/ifmail/ifmail -r $nexthop ($recipient)
bsmtp      unix  -       n       n       -       -       pipe flags=Fq. user=bsmtp argv=/usr/lib/bsmtp/bsmtp -t$nexthop -f$sender $recipient
scalemail-backend unix - n       n       -       2       pipe flags=R user=scalemail argv=/usr/lib/scalemail/bin/scalemail-store ${nexthop} ${user} ${extension}
mailman    unix  -       n       n       -       -       pipe flags=FRX user=list argv=/usr/lib/mailman/bin/postfix-to-mailman.py ${nexthop} ${user}
"""  # noqa: E501

STOCK_COMMANDS = [
    ("smtp", "inet", "smtpd"),
    ("pickup", "unix", "pickup"),
    ("cleanup", "unix", "cleanup"),
    ("qmgr", "unix", "qmgr"),
    ("tlsmgr", "unix", "tlsmgr"),
    ("rewrite", "unix", "trivial-rewrite"),
    ("bounce", "unix", "bounce"),
    ("defer", "unix", "bounce"),
    ("trace", "unix", "bounce"),
    ("verify", "unix", "verify"),
    ("flush", "unix", "flush"),
    ("proxymap", "unix", "proxymap"),
    ("proxywrite", "unix", "proxymap"),
    ("smtp", "unix", "smtp"),
    ("relay", "unix", "smtp"),
    ("showq", "unix", "showq"),
    ("error", "unix", "error"),
    ("retry", "unix", "error"),
    ("discard", "unix", "discard"),
    ("local", "unix", "local"),
    ("virtual", "unix", "virtual"),
    ("lmtp", "unix", "lmtp"),
    ("anvil", "unix", "anvil"),
    ("scache", "unix", "scache"),
    ("postlog", "unix-dgram", "postlogd"),
    ("maildrop", "unix", "pipe"),
    ("uucp", "unix", "pipe"),
    ("ifmail", "unix", "pipe"),
    ("bsmtp", "unix", "pipe"),
    ("scalemail-backend", "unix", "pipe"),
    ("mailman", "unix", "pipe"),
]


def one(text: str) -> MasterService:
    services = parse_master_cf(text, "master.cf")
    assert len(services) == 1
    return services[0]


def test_stock_master_cf_parses_every_service_in_order() -> None:
    """Debian's stock master.cf parses unchanged: every uncommented service, in file order."""
    services = parse_master_cf(STOCK_MASTER_CF, "master.cf")
    assert [(s.name, s.type, s.command) for s in services] == STOCK_COMMANDS


def test_stock_master_cf_columns() -> None:
    """The seven columns keep Postfix's meaning, '-' giving each column's default."""
    by_key = {(s.name, s.type): s for s in parse_master_cf(STOCK_MASTER_CF, "master.cf")}
    smtpd = by_key["smtp", "inet"]
    assert (smtpd.private, smtpd.unpriv, smtpd.chroot) == (False, True, True)
    assert smtpd.wakeup is None and smtpd.maxproc is None and smtpd.lineno == 12
    pickup = by_key["pickup", "unix"]
    assert (pickup.wakeup, pickup.maxproc, pickup.wakeup_if_used) == (60, 1, False)
    tlsmgr = by_key["tlsmgr", "unix"]
    assert (tlsmgr.wakeup, tlsmgr.wakeup_if_used) == (1000, True)
    cleanup = by_key["cleanup", "unix"]
    assert cleanup.maxproc == 0 and cleanup.private is False
    local = by_key["local", "unix"]
    assert (local.private, local.unpriv, local.chroot) == (True, False, False)


def test_stock_master_cf_continuation_lines_and_overrides() -> None:
    """Indented lines continue a service; '#' lines inside it are skipped, -o becomes overrides."""
    by_key = {(s.name, s.type): s for s in parse_master_cf(STOCK_MASTER_CF, "master.cf")}
    relay = by_key["relay", "unix"]
    assert relay.overrides == {"syslog_name": "postfix/$service_name"}
    assert relay.args == []
    maildrop = by_key["maildrop", "unix"]
    assert maildrop.args == [
        "flags=DRXhu",
        "user=vmail",
        "argv=/usr/bin/maildrop",
        "-d",
        "${recipient}",
    ]
    assert maildrop.overrides == {}


def test_format_service_matches_postfix_postconf_m() -> None:
    """format_service prints every stock service exactly as Postfix's postconf -M does."""
    services = parse_master_cf(STOCK_MASTER_CF, "master.cf")
    assert "\n".join(format_service(s) for s in services) + "\n" == STOCK_POSTCONF_M


def test_braced_override_keeps_spaces() -> None:
    """'-o { name = value with spaces }' (Postfix 3.0) sets the value with its spaces."""
    svc = one(
        "submission inet n - n - - smtpd\n"
        "  -o { smtpd_banner = hello  world }\n"
        "  -o smtpd_tls_security_level=encrypt -osyslog_name=postfix/submission\n"
    )
    assert svc.overrides == {
        "smtpd_banner": "hello  world",
        "smtpd_tls_security_level": "encrypt",
        "syslog_name": "postfix/submission",
    }
    assert svc.override_lines == {
        "smtpd_banner": 2,
        "smtpd_tls_security_level": 3,
        "syslog_name": 3,
    }
    assert format_service(svc).endswith(
        "smtpd -o {smtpd_banner=hello  world} -o smtpd_tls_security_level=encrypt "
        "-o syslog_name=postfix/submission"
    )


def test_empty_override_value() -> None:
    """'-o name=' sets an empty value, as the stock submission example does."""
    svc = one("submission inet n - n - - smtpd -o smtpd_client_restrictions=\n")
    assert svc.overrides == {"smtpd_client_restrictions": ""}


def test_later_duplicate_service_wins() -> None:
    """Two lines with the same service name and type: the last one is used, as in Postfix."""
    services = parse_master_cf(
        "smtp inet n - n - - smtpd\npickup unix n - n 60 1 pickup\nsmtp inet n - n - 5 smtpd\n"
    )
    assert [(s.name, s.maxproc, s.lineno) for s in services] == [
        ("pickup", 1, 2),
        ("smtp", 5, 3),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smtp inet n - n - smtpd\n", "expected service, type"),
        ("smtp tcp n - n - - smtpd\n", "bad type 'tcp'"),
        ("smtp inet x - n - - smtpd\n", "bad private field 'x'"),
        ("smtp inet - - n - - smtpd\n", "cannot be private"),
        ("pickup unix n - n soon 1 pickup\n", "bad wakeup field 'soon'"),
        ("pickup unix n - n 60 many pickup\n", "bad maxproc field 'many'"),
        ("x inet n - n - - smtpd -o\n", "-o without name=value"),
        ("x inet n - n - - smtpd -o novalue\n", "bad -o 'novalue'"),
        ("x inet n - n - - smtpd -o { a = b\n", "missing '}'"),
        ("  -o a=b\n", "continuation line without a service"),
    ],
)
def test_malformed_lines_are_errors_naming_file_and_line(text: str, message: str) -> None:
    """Each malformed master.cf line is a ConfigError naming the file, the line and the problem."""
    with pytest.raises(ConfigError) as info:
        parse_master_cf("# comment\n" + text, "/etc/pymta/master.cf")
    assert info.value.filename == "/etc/pymta/master.cf"
    assert info.value.lineno == 2
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2525", (None, 2525)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:2525", ("::1", 2525)),
        ("[127.0.0.1]:25", ("127.0.0.1", 25)),
        ("*:2525", (None, 2525)),
        ("smtp", (None, 25)),
        ("127.0.0.1:submission", ("127.0.0.1", 587)),
        ("submissions", (None, 465)),
        ("pop3", (None, 110)),
        ("imaps", (None, 993)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),  # pymta: the kernel picks a free port
    ],
)
def test_listen_address(name: str, expected: tuple[str | None, int]) -> None:
    """An inet service name gives (host or None, port), with service names resolved."""
    assert one(f"{name} inet n - n - - smtpd\n").listen_address() == expected


def test_listen_address_falls_back_when_the_system_lacks_a_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without /etc/services entries, the well-known mail ports come from pymta's own table."""

    def no_services(name: str, proto: str = "tcp") -> int:
        raise OSError("service not found")

    monkeypatch.setattr(socket, "getservbyname", no_services)
    assert one("submission inet n - n - - smtpd\n").listen_address() == (None, 587)
    assert one("pop3s inet n - n - - pop3d\n").listen_address() == (None, 995)


@pytest.mark.parametrize("name", ["nosuchservice", "127.0.0.1:99999", "[::1]2525", "-1"])
def test_bad_listen_address_is_an_error(name: str) -> None:
    """An unresolvable port or a malformed address is a ConfigError naming file and line."""
    svc = one(f"{name} inet n - n - - smtpd\n")
    with pytest.raises(ConfigError) as info:
        svc.listen_address()
    assert info.value.filename == "master.cf" and info.value.lineno == 1


def test_listen_address_of_unix_service_is_an_error() -> None:
    """Only inet services listen on TCP."""
    with pytest.raises(ConfigError):
        one("pickup unix n - n 60 1 pickup\n").listen_address()


def unchrooted(text: str) -> str:
    """master.cf text with every chroot column (the 5th) set to n."""
    lines = []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 8 and line[:1] not in "# \t" and fields[4] == "y":
            # Replace the fifth field in place, keeping the layout.
            spans = [m.span() for m in re.finditer(r"\S+", line)]
            start, end = spans[4]
            line = line[:start] + "n" + line[end:]
        lines.append(line)
    return "".join(lines)


#: Debian's stock master.cf as pymta starts it: chroot column n.
UNCHROOTED_MASTER_CF = unchrooted(STOCK_MASTER_CF)

BUILT = {
    "smtpd",
    "qmgr",
    "cleanup",
    "rewrite",
    "bounce",
    "local",
    "virtual",
    "lmtp",
    "discard",
    "error",
    "smtp",
    "pickup",
    "showq",
    "flush",
}


def test_check_master_refuses_a_chroot_it_cannot_do() -> None:
    """Debian's stock master.cf chroots smtpd and most services: pymta runs
    its services in one process and cannot chroot one of them, so the start
    stops naming the first such line, the others and the fix; chroot y on a
    service pymta does not run (tlsmgr) is no reason to stop."""
    with pytest.raises(ConfigError) as info:
        check_master(parse_master_cf(STOCK_MASTER_CF, "master.cf"), BUILT)
    text = str(info.value)
    assert text.startswith(
        "master.cf, line 12: service 'smtp' (smtpd): the chroot column (5th) is y, "
        "which pymta cannot do"
    )
    assert (
        "Write n (or -, the default since Postfix 3.0) in that column here and on lines 53, "
        in (text)
    )
    assert ", 57," not in text  # tlsmgr: not run by pymta
    assert check_master(parse_master_cf("tlsmgr unix - - y 1000? 1 tlsmgr\n"), BUILT) == [
        "master.cf, line 1: service 'tlsmgr' (tlsmgr): not needed in pymta, ignored"
    ]


def test_check_master_warns_once_per_ignored_service() -> None:
    """Services pymta needs no process for, or has not built, are one warning each, with line."""
    services = parse_master_cf(UNCHROOTED_MASTER_CF, "master.cf")
    warnings = check_master(services, BUILT)
    assert "master.cf, line 57: service 'tlsmgr' (tlsmgr): not needed in pymta, ignored" in (
        warnings
    )
    assert "master.cf, line 79: service 'postlog' (postlogd): not needed in pymta, ignored" in (
        warnings
    )
    assert (
        "master.cf, line 93: service 'maildrop' (pipe): not built yet in pymta, ignored" in warnings
    )
    ignored = {w.split("'")[1] for w in warnings}
    assert ignored == {
        "tlsmgr",
        "verify",
        "proxymap",
        "proxywrite",
        "anvil",
        "scache",
        "postlog",
        "maildrop",
        "uucp",
        "ifmail",
        "bsmtp",
        "scalemail-backend",
        "mailman",
    }
    assert len(warnings) == len(ignored)


def test_check_master_accepts_command_names_as_built() -> None:
    """'built' may name commands (trivial-rewrite) as well as parts (rewrite)."""
    services = parse_master_cf("rewrite unix - - n - - trivial-rewrite\n")
    assert check_master(services, {"trivial-rewrite"}) == []
    assert check_master(services, {"rewrite"}) == []
    assert len(check_master(services, set())) == 1


def test_unknown_command_is_an_error_naming_file_and_line() -> None:
    """A command pymta does not know stops the start, naming file and line."""
    services = parse_master_cf(
        "smtp inet n - n - - smtpd\nfoo unix - - n - - frobnicate\n", "/etc/pymta/master.cf"
    )
    with pytest.raises(ConfigError) as info:
        check_master(services, set(PARTS.values()))
    assert (info.value.filename, info.value.lineno) == ("/etc/pymta/master.cf", 2)
    assert "frobnicate" in str(info.value)


def test_command_given_as_path_is_recognised() -> None:
    """A command written as a path is recognised by its base name."""
    services = parse_master_cf("smtp inet n - n - - /usr/lib/postfix/sbin/smtpd\n")
    assert check_master(services, {"smtpd"}) == []


def test_every_pymta_command_has_a_part() -> None:
    """The command table and the part table agree: each 'pymta' command names its part."""
    for command, status in COMMANDS.items():
        assert status in ("pymta", "builtin")
        assert (command in PARTS) == (status == "pymta")


def test_load_master_reads_the_file_and_names_a_missing_one(tmp_path: object) -> None:
    """load_master reads DIR/master.cf; a missing file is a ConfigError naming it."""
    from pathlib import Path

    directory = Path(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_master(directory)
    assert info.value.filename == str(directory / "master.cf")
    (directory / "master.cf").write_text(STOCK_MASTER_CF)
    services = load_master(directory)
    assert services[0].filename == str(directory / "master.cf")
    assert len(services) == len(STOCK_COMMANDS)


def test_service_config_applies_overrides_and_service_name() -> None:
    """A service's Config has its -o overrides over main.cf, with $service_name expanded."""
    from pymta.config.config import Config

    base = Config.from_text("syslog_name = postfix\nsmtpd_banner = main\n")
    relay = parse_master_cf(STOCK_MASTER_CF, "master.cf")[14]
    assert relay.name == "relay"
    derived = relay.service_config(base)
    assert derived.get("syslog_name") == "postfix/relay"
    assert derived.get("smtpd_banner") == "main"
    assert base.get("syslog_name") == "postfix"


def test_process_limit_defaults_to_default_process_limit() -> None:
    """maxproc '-' means default_process_limit; a number is used as is."""
    from pymta.config.config import Config

    config = Config.from_text("default_process_limit = 7\n")
    assert one("smtp inet n - n - - smtpd\n").process_limit(config) == 7
    assert one("smtp inet n - n - 3 smtpd\n").process_limit(config) == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # A NUL byte reached socket.getservbyname: ValueError.
        ("a\x00 inet n - n - - smtpd", "bad port 'a\\x00'"),
        # '²' passes str.isdigit() and then fails in int().
        ("\u00b2 inet n - n - - smtpd", "bad port '\u00b2'"),
        ("127.0.0.1:\u00b2 inet n - n - - smtpd", "bad port '\u00b2'"),
        ("\udcff inet n - n - - smtpd", "bad port '\\udcff'"),
    ],
)
def test_bad_service_names_are_config_errors(line: str, message: str) -> None:
    """A service name that no port or /etc/services name can be is a
    ConfigError naming file and line when the listen address is asked."""
    (service,) = parse_master_cf(f"# services\n{line}\n", "/etc/pymta/master.cf")
    with pytest.raises(ConfigError) as info:
        service.listen_address()
    assert (info.value.filename, info.value.lineno) == ("/etc/pymta/master.cf", 2)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("wakeup", "maxproc", "message"),
    [
        ("-", "\u00b2", "bad maxproc field"),
        ("-", "\u0663", "bad maxproc field"),
        ("\u00b2", "-", "bad wakeup field"),
        ("\u0663?", "-", "bad wakeup field"),
    ],
)
def test_non_ascii_digits_are_config_errors(wakeup: str, maxproc: str, message: str) -> None:
    """wakeup and maxproc take ASCII digits only ('²' used to pass isdigit()
    and fail in int() with ValueError)."""
    text = f"smtp inet n - n {wakeup} {maxproc} smtpd\n"
    with pytest.raises(ConfigError) as info:
        parse_master_cf(text, "master.cf")
    assert (info.value.filename, info.value.lineno) == ("master.cf", 1)
    assert message in info.value.message


def test_master_cf_that_is_not_utf8_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """A master.cf holding a byte that is not UTF-8 is a ConfigError naming
    the file and the line of that byte, not UnicodeDecodeError."""
    (tmp_path / "master.cf").write_bytes(
        b"smtp inet n - n - - smtpd\n# caf\xe9\nsubmission inet n - n - - smtpd\n"
    )
    with pytest.raises(ConfigError) as info:
        load_master(tmp_path)
    assert (info.value.filename, info.value.lineno) == (str(tmp_path / "master.cf"), 2)
    assert "not UTF-8" in info.value.message
