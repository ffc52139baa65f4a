"""privsep: becoming a local recipient, behind one seam.

- :mod:`~pymta.privsep.interface`: :class:`IUserDelivery` (write a mailbox
  or run a command as a Unix user) and :class:`UnixUser`.
- :mod:`~pymta.privsep.spawn`: a short child process per delivery
  (:mod:`~pymta.privsep.child` for mailboxes, ``/bin/sh -c`` or argv for
  commands) that takes the user's uid, gid and groups; used when pymta
  itself runs as root, or as an ordinary user (then only as itself).
- :mod:`~pymta.privsep.helper` and :mod:`~pymta.privsep.client`: the root
  helper forked before twistd's ``-u`` switch, the only process that keeps
  root, asked over a socketpair only pymta holds;
  :mod:`~pymta.privsep.verify` is how it works each target out for itself.
- :mod:`~pymta.privsep.memory`: an in-process recorder for tests.
"""
