"""privsep: becoming a local recipient, behind one seam.

- :mod:`~pymta.privsep.interface`: :class:`IUserDelivery` (write a mailbox
  or run a command as a Unix user) and :class:`UnixUser`.
- :mod:`~pymta.privsep.spawn`: its implementation, one short child process
  per delivery (:mod:`~pymta.privsep.child` for mailboxes, ``/bin/sh -c``
  for commands) that takes the user's uid, gid and groups.
"""
