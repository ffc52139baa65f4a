"""pymta.cli: the ``pymta`` admin command (see docs/admin-guide.md).

:mod:`~pymta.cli.main` dispatches to one module per family of commands:
:mod:`~pymta.cli.postconf`, :mod:`~pymta.cli.postmap`,
:mod:`~pymta.cli.queue`, :mod:`~pymta.cli.passwd`, :mod:`~pymta.cli.control`
(start, stop, abort, status, reload).
"""
