"""MTA-STS: the policy text a policy host serves, and the ``_mta-sts`` TXT records.

The input (UTF-8, undecodable bytes kept as surrogate escapes) is parsed
as a policy, as TXT records (one per line) and as a cache file. Documented
errors: :class:`~pymta.mtasts.policy.PolicyError` (an invalid policy: no
policy applies) and ValueError from the cache file's reader (the file is
replaced). Checked besides: a policy that parsed, written out as the cache
keeps it, parses again to the same policy, and its MX patterns match the
names they describe.
"""

from __future__ import annotations

from fuzz.common import Finding
from pymta.mtasts.cache import decode
from pymta.mtasts.policy import PolicyError, parse_policy, parse_record

EXPECTED: tuple[type[BaseException], ...] = (PolicyError, ValueError)


def seeds() -> list[bytes]:
    """Policies and records from tests/test_mtasts_policy.py."""
    texts = [
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        "max_age: 604800\r\n",
        "version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmx: MX.Example.COM.\n"
        "max_age: 9999999999\n",
        "version: STSv1\nmode: none\nmax_age: 86400\n",
        "v=STSv1; id=20160831085700Z;\nv=spf1 -all",
        '{"format": "pymta-mta-sts-cache 1", "domains": {"a.test": {"id": "1", '
        '"fetched": 1.0, "policy": "version: STSv1\\nmode: none\\nmax_age: 1\\n"}}}',
    ]
    return [t.encode("utf-8") for t in texts]


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    parse_record(text.split("\n"))
    try:
        decode(text)
    except ValueError:
        pass
    policy = parse_policy(text)
    again = parse_policy(policy.text())
    if again != policy:
        raise Finding(f"{policy!r} written out parses as {again!r}")
    for pattern in policy.mx:
        name = "x" + pattern[1:] if pattern.startswith("*.") else pattern
        if not policy.permits(name):
            raise Finding(f"pattern {pattern!r} does not match {name!r}")
