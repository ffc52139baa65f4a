"""keytable: which key signs which mail — OpenDKIM's KeyTable and SigningTable.

``pymta_dkim_key_table`` (OpenDKIM's KeyTable, a ``file:`` dataset): one
key per line, ``KEYNAME DOMAIN:SELECTOR:KEYFILE``; ``DOMAIN`` ``%`` means
the domain of the From address being signed. ``#`` starts a comment.

``pymta_dkim_signing_table`` (OpenDKIM's SigningTable): ``PATTERN
KEYNAME`` per line, matched against the address in the From header.
As a plain file (OpenDKIM's ``file:``) the lookups are, in order, the
whole address ``user@example.com`` and then the domain ``example.com``,
then each parent domain as ``.example.com`` (a leading dot matches
subdomains); with the prefix ``refile:`` each PATTERN is a wildcard
(``*@example.com``, ``*``) and the first matching line wins, as in
OpenDKIM. The first match signs (OpenDKIM's MultipleSignatures = no).

Both files are read at start; a missing key file, an unknown key name or
a bad line stops the start with the file, line and expected form (the
configuration never lies). Untrusted input: the From address. Writes and
logs nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from pymta.config import ConfigError
from pymta.mailauth.keys import KeyError_, SigningKey, load_key


@dataclass(frozen=True)
class KeyEntry:
    domain: str  # "%": the From domain
    selector: str
    key: SigningKey


@dataclass(frozen=True)
class Signer:
    """What one message is signed with."""

    domain: str
    selector: str
    key: SigningKey


def _lines(path: str, parameter: str) -> list[tuple[int, list[str]]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", parameter=parameter) from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append((number, line.split()))
    return rows


def load_key_table(path: str) -> dict[str, KeyEntry]:
    parameter = "pymta_dkim_key_table"
    table: dict[str, KeyEntry] = {}
    for number, fields in _lines(path, parameter):
        parts = fields[1].split(":", 2) if len(fields) == 2 else []
        if len(parts) != 3 or not all(parts):
            raise ConfigError(
                f"{path}, line {number}: expected 'KEYNAME DOMAIN:SELECTOR:KEYFILE'",
                parameter=parameter,
            )
        domain, selector, key_file = parts
        try:
            with open(key_file, "rb") as f:
                key = load_key(f.read(), key_file)
        except OSError as e:
            raise ConfigError(
                f"{path}, line {number}: cannot read {key_file}: {e.strerror}", parameter=parameter
            ) from None
        except KeyError_ as e:
            raise ConfigError(f"{path}, line {number}: {e}", parameter=parameter) from None
        table[fields[0]] = KeyEntry(domain.lower(), selector, key)
    return table


class SigningTable:
    """Chooses the key for a From address (see the module docstring)."""

    def __init__(self, path: str, keys: dict[str, KeyEntry]) -> None:
        parameter = "pymta_dkim_signing_table"
        self._wildcard = path.startswith("refile:")
        path = path.removeprefix("refile:").removeprefix("file:")
        self._rows: list[tuple[str, KeyEntry]] = []
        for number, fields in _lines(path, parameter):
            if len(fields) != 2:
                raise ConfigError(
                    f"{path}, line {number}: expected 'PATTERN KEYNAME'", parameter=parameter
                )
            if fields[1] not in keys:
                raise ConfigError(
                    f"{path}, line {number}: key {fields[1]!r} is not in pymta_dkim_key_table",
                    parameter=parameter,
                )
            self._rows.append((fields[0].lower(), keys[fields[1]]))
        self._exact = {} if self._wildcard else dict(reversed(self._rows))

    def find(self, address: str) -> Signer | None:
        """The signer for the From ``address``, or None: not ours to sign."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        if not domain:
            return None
        entry = self._match(address, domain)
        if entry is None:
            return None
        return Signer(domain if entry.domain == "%" else entry.domain, entry.selector, entry.key)

    def _match(self, address: str, domain: str) -> KeyEntry | None:
        if self._wildcard:
            for pattern, entry in self._rows:
                if fnmatch.fnmatchcase(address, pattern):
                    return entry
            return None
        for key in (address, domain):
            if key in self._exact:
                return self._exact[key]
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = "." + ".".join(labels[i:])
            if parent in self._exact:
                return self._exact[parent]
        return None
