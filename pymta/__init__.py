"""pymta: a complete mail system on Twisted, built the way Postfix is built.

See docs/architecture.md for the parts; each subpackage is one of them.
"""

__version__ = "0.1.0"
