"""Envelope address rewriting in cleanup: canonical maps and virtual aliases.

Mirrors Postfix's cleanup_addr.c, cleanup_map11.c and cleanup_map1n.c.
Every address is first put in standard form (trivial-rewrite's local
context: append_at_myorigin). Then:

- sender: sender_canonical_maps, then canonical_maps (one-to-one; a result
  is looked up again, at most 10 times, until it no longer changes), then
  masquerade_domains (pymta.cleanup.masquerade);
- each recipient: recipient_canonical_maps, then canonical_maps (the same
  way), masquerading when masquerade_classes has envelope_recipient, then
  virtual_alias_maps expansion (one-to-many, recursive).

Each canonical table applies only to the address classes its
``*_canonical_classes`` parameter names (envelope_sender,
envelope_recipient, header_sender, header_recipient); the header classes
are used by pymta.cleanup.header_addresses through :meth:`header_sender`
and :meth:`header_recipient`.

Virtual alias expansion follows cleanup_map1n: each result address is
expanded again, up to virtual_alias_recursion_limit levels and
virtual_alias_expansion_limit addresses in all (beyond either the message
is deferred, as Postfix does: 451 4.3.0). An address that maps to itself
(``a -> a, b``) is kept as it is, as Postfix does; pymta also keeps an
address met again further down its own chain (``a -> b``, ``b -> a``)
instead of spinning to the recursion limit. Lookups use Postfix's order
with recipient_delimiter, and propagate_unmatched_extensions.

Duplicate recipients (same address after expansion) are kept once, with
the first one's original address and DSN parameters. Untrusted input: the
addresses. Writes nothing; logs unreasonable expansions (warning).
TableError from a table propagates (the caller turns it into a 451).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import LogLevel

from pymta.cleanup.masquerade import Masquerade, address_classes
from pymta.config import Config
from pymta.maillog import maillog
from pymta.queue.model import Envelope, Recipient
from pymta.rewrite.canonical import AddressRewriter
from pymta.tables import Maps, lookup_address, open_maps, split_result

# Postfix's cleanup_map11 MAX_RECURSION.
_MAP11_RECURSION = 10

OpenMaps = Callable[..., Maps]


class ExpansionError(Exception):
    """Virtual alias expansion went past a limit: defer the message."""


class EnvelopeRewriter:
    """Rewrites a whole envelope in place of a copy; see module doc."""

    def __init__(
        self,
        config: Config,
        is_local_domain: Callable[[str], bool],
        open_maps: OpenMaps = open_maps,
    ) -> None:
        self._standard = AddressRewriter(config)
        self._is_local = is_local_domain
        self._delimiter = config.get("recipient_delimiter")
        propagate = {p.lower() for p in config.get_list("propagate_unmatched_extensions")}
        self._canonical_ext = "canonical" in propagate
        self._virtual_ext = "virtual" in propagate
        sender_maps = open_maps(config.get_list("sender_canonical_maps"), config)
        recipient_maps = open_maps(config.get_list("recipient_canonical_maps"), config)
        common_maps = open_maps(config.get_list("canonical_maps"), config)
        sender_classes = address_classes(config, "sender_canonical_classes")
        recipient_classes = address_classes(config, "recipient_canonical_classes")
        common_classes = address_classes(config, "canonical_classes")

        def chain(own: Maps, own_classes: frozenset[str], cls: str) -> list[Maps]:
            # sender_/recipient_canonical_maps first, then canonical_maps,
            # each only for the classes its *_classes parameter names; an
            # empty list of tables rewrites nothing, so it is left out (the
            # usual chain is empty: no call per address).
            return [
                maps
                for maps, classes in ((own, own_classes), (common_maps, common_classes))
                if cls in classes and maps
            ]

        self._sender_maps = chain(sender_maps, sender_classes, "envelope_sender")
        self._recipient_maps = chain(recipient_maps, recipient_classes, "envelope_recipient")
        self._header_sender_maps = chain(sender_maps, sender_classes, "header_sender")
        self._header_recipient_maps = chain(recipient_maps, recipient_classes, "header_recipient")
        self._masquerade = Masquerade.from_config(config)
        self._masquerade_classes = self._masquerade.classes if self._masquerade else frozenset()
        self._virtual = open_maps(config.get_list("virtual_alias_maps"), config)
        self._has_virtual = bool(self._virtual)  # the tables are fixed
        self._recursion_limit = config.get_int("virtual_alias_recursion_limit")
        self._expansion_limit = config.get_int("virtual_alias_expansion_limit")

    def _find(self, maps: Maps, address: str, propagate: bool) -> str | None:
        return lookup_address(
            maps,
            address,
            delimiter=self._delimiter,
            is_local_domain=self._is_local,
            propagate_extension=propagate,
        )

    def _map11(self, maps: Maps, address: str) -> str:
        if not maps:
            return address
        for _ in range(_MAP11_RECURSION):
            value = self._find(maps, address, self._canonical_ext)
            if value is None:
                break
            items = split_result(value)
            if not items:
                break
            new = self._standard.rewrite(items[0])
            if new == address:
                break
            address = new
        return address

    def sender(self, address: str) -> str:
        """The sender after standard form and sender/common canonical maps."""
        if not address:
            return address
        address = self._standard.rewrite(address)
        if address.lower().startswith("mailer-daemon@") or address.lower() == "mailer-daemon":
            # Postfix turns MAILER-DAEMON back into the null sender.
            return ""
        for maps in self._sender_maps:
            address = self._map11(maps, address)
        return self._masquerading(address, "envelope_sender")

    def recipient(self, address: str) -> str:
        """A recipient after standard form and recipient/common canonical maps."""
        address = self._standard.rewrite(address)
        for maps in self._recipient_maps:
            address = self._map11(maps, address)
        return self._masquerading(address, "envelope_recipient")

    def _masquerading(self, address: str, cls: str) -> str:
        if self._masquerade is None or cls not in self._masquerade_classes or not address:
            return address
        return self._masquerade.apply(address)

    def header_sender(self, address: str) -> str:
        """A sender header's address: standard form, canonical maps of the
        header_sender class, masquerading."""
        return self._header(address, self._header_sender_maps, "header_sender")

    def header_recipient(self, address: str) -> str:
        return self._header(address, self._header_recipient_maps, "header_recipient")

    def _header(self, address: str, chain: list[Maps], cls: str) -> str:
        if address.startswith('"') and "@" not in address.rsplit('"', 1)[-1]:
            return address  # a quoted word without a domain: leave it
        new = self._standard.rewrite(address)
        for maps in chain:
            new = self._map11(maps, new)
        return self._masquerading(new, cls)

    def expand(self, address: str, queue_id: str = "NOQUEUE") -> list[str]:
        """The virtual alias expansion of one (canonical) recipient."""
        if not self._has_virtual:
            return [address]
        result: list[str] = []
        # Depth-first, in table order: (address, depth, the chain above it).
        stack: list[tuple[str, int, frozenset[str]]] = [(address, 0, frozenset())]
        while stack:
            current, depth, chain = stack.pop()
            value = self._find(self._virtual, current, self._virtual_ext)
            if value is None:
                result.append(current)
            else:
                if depth >= self._recursion_limit:
                    maillog(
                        "cleanup",
                        f"{queue_id}: unreasonable virtual_alias_maps map nesting for"
                        f" {address} -- message not accepted",
                        LogLevel.warn,
                    )
                    raise ExpansionError("virtual alias nesting")
                key = current.lower()
                below = chain | {key}
                children = []
                for item in split_result(value):
                    new = self._standard.rewrite(item)
                    low = new.lower()
                    if low == key or low in chain:
                        result.append(new)  # maps to itself: kept, not expanded
                        continue
                    children.append((new, depth + 1, below))
                stack.extend(reversed(children))
            if len(result) + len(stack) > self._expansion_limit:
                maillog(
                    "cleanup",
                    f"{queue_id}: unreasonable virtual_alias_maps map expansion size for"
                    f" {address} -- message not accepted",
                    LogLevel.warn,
                )
                raise ExpansionError("virtual alias expansion size")
        return result

    def rewrite(self, envelope: Envelope, queue_id: str = "NOQUEUE") -> Envelope:
        """A new envelope with every address rewritten and recipients expanded
        and de-duplicated; ``original`` keeps the address as received."""
        recipients: list[Recipient] = []
        seen: set[str] = set()
        for rcpt in envelope.recipients:
            original = rcpt.original or rcpt.address
            for address in self.expand(self.recipient(rcpt.address), queue_id):
                key = address.lower()
                if key in seen:
                    continue
                seen.add(key)
                recipients.append(Recipient(address, original, rcpt.orcpt, rcpt.notify, rcpt.done))
        return Envelope(
            self.sender(envelope.sender),
            recipients,
            envelope.arrival_time,
            dict(envelope.attributes),
        )
