"""``pymta dkim keygen``: make a DKIM key and print its DNS record.

Mirrors OpenDKIM's opendkim-genkey::

    pymta dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits N] [-d DIR]

writes DIR/SELECTOR.private (mode 0600; DIR defaults to the current
directory; an existing file is never overwritten) — RSA (2048 bits unless
``--bits``; RFC 8301 asks for at least 1024) in PEM, Ed25519 (RFC 8463)
as the base64 seed dkimpy reads — and prints on standard output the TXT
record to publish at ``SELECTOR._domainkey.DOMAIN``, then the lines to add
to the KeyTable and SigningTable files of ``pymta_dkim_key_table`` and
``pymta_dkim_signing_table``. Errors are ``pymta: fatal: ...``, exit 1.
"""

from __future__ import annotations

import getopt
import os
import re
import sys

from pymta.mailauth.keys import KEY_TYPES, generate_key, txt_record, write_key

PROG = "pymta"
USAGE = "usage: dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits N] [-d DIR]"
_LABELS = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _fatal(message: str) -> int:
    print(f"{PROG}: fatal: {message}", file=sys.stderr)
    return 1


def run(args: list[str], config_dir: str) -> int:
    if not args or args[0] != "keygen":
        return _fatal(USAGE)
    try:
        opts, rest = getopt.gnu_getopt(args[1:], "d:t:b:", ["type=", "bits=", "directory="])
    except getopt.GetoptError as e:
        return _fatal(f"{e}; {USAGE}")
    if len(rest) != 2:
        return _fatal(USAGE)
    domain, selector = rest[0].lower().rstrip("."), rest[1]
    key_type, bits, directory = "rsa", 2048, "."
    for opt, value in opts:
        if opt in ("-t", "--type"):
            key_type = value.lower()
        elif opt in ("-b", "--bits"):
            if not value.isdigit() or not 1024 <= int(value) <= 8192:
                return _fatal(f"bad --bits {value!r}: expected 1024 to 8192")
            bits = int(value)
        elif opt in ("-d", "--directory"):
            directory = value
    if key_type not in KEY_TYPES:
        return _fatal(f"bad --type {key_type!r}: expected rsa or ed25519")
    for what, name in (("domain", domain), ("selector", selector)):
        if not _LABELS.match(name):
            return _fatal(f"bad {what} {name!r}: expected DNS labels")
    path = os.path.join(directory, f"{selector}.private")
    key = generate_key(key_type, bits)
    try:
        write_key(key, path)
    except FileExistsError:
        return _fatal(f"{path} exists: not overwritten")
    except OSError as e:
        return _fatal(f"cannot write {path}: {e.strerror}")
    keyname = f"{selector}._domainkey.{domain}"
    print(txt_record(key, domain, selector))
    print(f"# {path}: add to pymta_dkim_key_table:")
    print(f"#   {keyname} {domain}:{selector}:{os.path.abspath(path)}")
    print("# and to pymta_dkim_signing_table:")
    print(f"#   {domain} {keyname}")
    return 0
