"""pymta.delivery: the delivery agents, Postfix's local, virtual, smtp, lmtp,
discard and error (see docs/architecture.md).

- :mod:`~pymta.delivery.interface`: IDeliveryAgent; statuses are values.
- :mod:`~pymta.delivery.registry`: agents by master.cf command name.
- :mod:`~pymta.delivery.virtual`, :mod:`~pymta.delivery.mbox`: virtual(8)
  into Maildir (through the mail store's :mod:`pymta.mailstore.deliver`)
  and mbox.
- :mod:`~pymta.delivery.local`, :mod:`~pymta.delivery.command`: local(8)
  aliases, files and commands.
- :mod:`~pymta.delivery.smtp` and its ``smtp_*`` modules: smtp(8) and lmtp(8).
- :mod:`~pymta.delivery.discard`, :mod:`~pymta.delivery.error`: discard, error, retry.
- :mod:`~pymta.delivery.final`, :mod:`~pymta.delivery.mailbox`: final
  delivery to a user's mailbox (virtual, LMTP, Sieve) and the Mailbox value.
"""
