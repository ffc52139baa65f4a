"""quota: per-user mailbox quotas, as Dovecot's quota plugin counts them.

Modules: :mod:`~pymta.quota.rules` (Dovecot's ``quota_rule`` syntax),
:mod:`~pymta.quota.usage` (what a Maildir++ mailbox holds, counted from its
files), :mod:`~pymta.quota.maildirsize` (the Maildir++ ``maildirsize``
file kept in step with that count, as Dovecot writes it),
:mod:`~pymta.quota.policy` (limits, the checks at RCPT, delivery and
APPEND, and the warning mails).
"""
