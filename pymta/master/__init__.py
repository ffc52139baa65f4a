"""master: several reactor processes sharing the listening sockets and the queue.

docs/architecture.md, "Process model": one reactor is one core; with ``pymta_processes`` above
1 the twistd process (the master) spawns workers that accept on the same
sockets and write to the same queue, as Postfix's daemons share master's
sockets and the queue directory. Modules: :mod:`~pymta.master.workers` (the
pool the master runs), :mod:`~pymta.master.worker` (a worker's main),
:mod:`~pymta.master.adopt` (inherited listeners), :mod:`~pymta.master.claims`
(who owns a message in incoming/ and active/), :mod:`~pymta.master.appendlog`
(maillog_file lines that never interleave), :mod:`~pymta.master.control`
(the signals: SIGHUP reload, SIGQUIT abort), :mod:`~pymta.master.reload`
(applying a changed main.cf and master.cf to the running processes).
"""
