"""Fuzz harnesses of pymta's parsers of untrusted bytes (run on demand, not in CI).

One module per target under :mod:`fuzz.targets`; each says which exceptions
are its module's documented errors. Anything else raised, a failure logged
by a protocol, or one call over 1 s on an input under 10 KB, is a finding.
Run one with ``python -m fuzz.run TARGET --seconds N`` (see fuzz/run.py).
"""
