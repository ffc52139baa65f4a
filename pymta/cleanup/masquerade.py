"""masquerade: address masquerading, as cleanup(8) does it (cleanup_masquerade.c).

``masquerade_domains = example.com`` turns ``user@host.example.com`` into
``user@example.com``: the list is searched in order, and the first entry
that is the address's domain or a parent of it decides — a parent rewrites
the domain to that entry, the domain itself stops the search unchanged,
and a ``!sub.example.com`` entry (a parent or the domain) stops it without
rewriting, so ``!sub.example.com, example.com`` keeps ``sub.example.com``.
``masquerade_exceptions`` lists local parts never masqueraded (``root``).
Which addresses: ``masquerade_classes`` (envelope_sender, envelope_recipient,
header_sender, header_recipient; Postfix's default leaves envelope
recipients alone). Untrusted input: the addresses. Writes and logs nothing.
"""

from __future__ import annotations

from pymta.address import split_address
from pymta.config import Config, ConfigError

CLASSES = ("envelope_sender", "envelope_recipient", "header_sender", "header_recipient")


def address_classes(config: Config, parameter: str) -> frozenset[str]:
    """A *_classes parameter as a set; an unknown class stops the start."""
    classes = frozenset(c.lower() for c in config.get_list(parameter))
    unknown = classes - set(CLASSES)
    if unknown:
        raise ConfigError(
            f"unknown address class {sorted(unknown)[0]!r}: expected {', '.join(CLASSES)}",
            parameter=parameter,
        )
    return classes


class Masquerade:
    """masquerade_domains and masquerade_exceptions (see the module docstring)."""

    def __init__(self, domains: list[str], exceptions: list[str], classes: frozenset[str]) -> None:
        self._domains = [d.lower() for d in domains if d.strip("!")]
        self._exceptions = {e.lower() for e in exceptions}
        self.classes = classes

    @classmethod
    def from_config(cls, config: Config) -> Masquerade | None:
        domains = config.get_list("masquerade_domains")
        if not domains:
            return None
        return cls(
            domains,
            config.get_list("masquerade_exceptions"),
            address_classes(config, "masquerade_classes"),
        )

    def apply(self, address: str) -> str:
        local, domain = split_address(address)
        if not domain or local.lower() in self._exceptions:
            return address
        lower = domain.lower()
        for entry in self._domains:
            excluded = entry.startswith("!")
            name = entry[1:] if excluded else entry
            if lower == name:
                return address
            if lower.endswith("." + name):
                return address if excluded else f"{local}@{name}"
        return address
