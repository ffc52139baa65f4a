"""pickup: the maildrop directory's files become queued mail (Postfix's pickup).

:mod:`~pymta.pickup.service` is the Twisted service, :mod:`~pymta.pickup.reader`
checks and reads one file in a pool thread.
"""
