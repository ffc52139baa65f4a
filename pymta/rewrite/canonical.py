"""Rewrite addresses to standard form, trivial-rewrite's "local" context.

Mirrors Postfix's rewrite_clnt/rewrite_addr as cleanup uses it for every
envelope address before canonical and virtual alias maps: a bare local part
gets ``@$myorigin`` (append_at_myorigin), and a domain without a dot gets
``.$mydomain`` when append_dot_mydomain is on. ``site!user`` becomes
``user@site`` (swap_bangpath) and a source route ``@a,@b:user@c`` is
reduced to ``user@c``. The null address stays empty. Untrusted input: the
address. Writes and logs nothing.
"""

from __future__ import annotations

from pymta.address import split_address
from pymta.config import Config


class AddressRewriter:
    """Puts addresses into the standard ``local@domain`` form."""

    def __init__(self, config: Config) -> None:
        self._myorigin = config.get("myorigin").lower()
        self._mydomain = config.get("mydomain").lower()
        self._append_at_myorigin = config.get_bool("append_at_myorigin")
        self._append_dot_mydomain = config.get_bool("append_dot_mydomain")
        self._swap_bangpath = config.get_bool("swap_bangpath")

    def rewrite(self, address: str) -> str:
        """The address in standard form ("" stays "")."""
        if not address:
            return address
        if '"' not in address and address[0] != "@":
            # The usual address, already local@domain.with.dots: unchanged
            # (split at its last @, as split_address does without quotes).
            local, at, domain = address.rpartition("@")
            if (
                at
                and domain
                and ("." in domain or domain[0] == "[" or not self._append_dot_mydomain)
            ):
                return address
        if address.startswith("@") and ":" in address:
            # RFC 5321 section 4.1.1.3: source routes are ignored.
            address = address.partition(":")[2]
        local, domain = split_address(address)
        if not domain and self._swap_bangpath and "!" in local and '"' not in local:
            site, _, user = local.partition("!")
            if site and user:
                local, domain = user, site
        if not domain:
            if not self._append_at_myorigin or not self._myorigin:
                return local
            return f"{local}@{self._myorigin}"
        if self._append_dot_mydomain and "." not in domain and not domain.startswith("["):
            if self._mydomain:
                domain = f"{domain}.{self._mydomain}"
        return f"{local}@{domain}"
