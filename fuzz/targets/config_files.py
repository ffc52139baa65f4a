"""main.cf, master.cf and lookup-table files (texthash:, regexp:, pcre:).

The administrator's files, fuzzed as bytes: the first input byte picks the
file kind, the rest is the file. main.cf and master.cf are decoded as
pymta reads them (UTF-8, else ConfigError), parsed and checked the way the
start and ``pymta check`` check them (every value expanded and typed,
master.cf listen addresses and process limits, ``postconf -M`` output);
table sources are decoded with surrogate escapes as the tables read them,
parsed, and looked up with a few keys.

Documented errors: :class:`~pymta.config.errors.ConfigError` for main.cf
and master.cf (naming file and line). Table parsers report bad lines as
problems and raise nothing.
"""

from __future__ import annotations

from fuzz.common import Finding
from pymta.config.config import Config
from pymta.config.errors import ConfigError
from pymta.config.files import decode_config_text
from pymta.config.master_cf import check_master, format_service, parse_master_cf
from pymta.config.validate import validate
from pymta.tables import regexp
from pymta.tables.texthash import parse_table_text

EXPECTED: tuple[type[BaseException], ...] = (ConfigError,)

KINDS = ("main.cf", "master.cf", "texthash", "regexp", "pcre")
_KEYS = ("user@example.com", "owner-list@lists.example.test", "x", "", "Special@EXAMPLE")


def seeds() -> list[bytes]:
    """Files after the tests (tests/test_config_*.py, tests/test_tables_*.py)."""
    files = {
        "main.cf": b"# sample\nmyhostname = mail.$mydomain\nmydomain = example.org\n"
        b"mydestination = $myhostname,\n    localhost\nmessage_size_limit = 1000\n"
        b"smtpd_timeout = 5m\nrelayhost = [r]:25\nsmtpd_banner = ${myhostname?x} $mail_name\n"
        b"inet_protocols = ipv4\nvirtual_alias_maps = inline:{ a=b, c=d }\n",
        "master.cf": b"smtp      inet  n       -       y       -       -       smtpd\n"
        b"submission inet n       -       y       -       -       smtpd\n"
        b"  -o syslog_name=postfix/submission\n  -o { smtpd_tls_security_level = encrypt }\n"
        b"127.0.0.1:2525 inet n - n - 10 smtpd -o smtpd_timeout=1m\n"
        b"[::1]:0 inet n - n - - smtpd\npickup unix n - y 60? 1 pickup\n"
        b"qmgr unix n - n 300 1 qmgr\nrelay unix - - y - - smtp -o smtp_helo_timeout=5\n",
        "texthash": b"# map\nuser@example.com  ok\nexample.org\tREJECT no\n  continued\n"
        b"@example.net OK\n",
        "regexp": b"/^(.*)-outgoing@(.*)$/   ${1}@$2\n/^Special@/i             case-sensitive\n"
        b"/^user@(example\\.test)$/  found $1 $$5\n!/@/                     no-domain\n"
        b"if /@lists\\./\n/^owner-/                owner-of-list\n/./  list-member\nendif\n"
        b"if !/\\.test$/\n/^x/                     x-not-test\nendif\n",
        "pcre": b"/^multi/m  yes\n/a.b/s dot-all\n/^(?P<user>[^@]+)@/A user $1\n",
    }
    out = [bytes([KINDS.index(kind)]) + text for kind, text in files.items()]
    out.append(bytes([KINDS.index("texthash")]) + b"postmaster: root\nabuse: postmaster, x\n")
    return out


def _main_cf(data: bytes) -> None:
    text = decode_config_text(data, "main.cf")
    config = Config.from_text(text, "main.cf")
    validate(config, None)
    for name in config.explicit():
        config.get_list(name)


def _master_cf(data: bytes) -> None:
    text = decode_config_text(data, "master.cf")
    services = parse_master_cf(text, "master.cf")
    config = Config.from_text("")
    validate(config, services)
    try:
        check_master(services, {"smtpd", "qmgr", "pickup"})
    except ConfigError:
        pass
    for service in services:
        format_service(service)
        service.process_limit(config)
        if service.type == "inet":
            try:
                service.listen_address()
            except ConfigError:
                pass


def _table(data: bytes, kind: str) -> None:
    text = data.decode("utf-8", "surrogateescape")
    if kind == "texthash":
        parsed = parse_table_text(text, "table")
        for problem in parsed.problems:
            str(problem)
        return
    rules, problems = regexp.parse_rules(text, "table", kind)
    for problem in problems:
        str(problem)
    for key in _KEYS:
        result = regexp.evaluate(rules, key)
        if result is not None and not isinstance(result, str):
            raise Finding(f"lookup result {result!r} is not text")


def one_input(data: bytes) -> None:
    if not data:
        return
    kind = KINDS[data[0] % len(KINDS)]
    if kind == "main.cf":
        _main_cf(data[1:])
    elif kind == "master.cf":
        _master_cf(data[1:])
    else:
        _table(data[1:], kind)
