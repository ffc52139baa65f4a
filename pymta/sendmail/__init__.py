"""sendmail: the local submission command (Postfix's sendmail + postdrop).

:mod:`~pymta.sendmail.command` is the command, :mod:`~pymta.sendmail.options`
its options, :mod:`~pymta.sendmail.params` reads its main.cf parameters
quickly, :mod:`~pymta.sendmail.message` reads the message,
:mod:`~pymta.sendmail.postdrop` writes it into the maildrop directory in the
format of :mod:`~pymta.sendmail.record`, :mod:`~pymta.sendmail.authorized`
checks ``authorized_submit_users`` and :mod:`~pymta.sendmail.smtp` is
``-bs``. pymta.pickup reads the files. Nothing here imports Twisted: the
command starts fast.
"""
