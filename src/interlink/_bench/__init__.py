"""The benchmark harness behind ``interlink bench``.

Every measurement runs between two separate processes (``multiprocessing``
with the ``spawn`` start method), with the same payloads for interlink and for
the peers a user would otherwise pick. The modules, from the bottom up:

``settings``
    what is measured and how much of it (:class:`~.settings.Settings`).
``framing``
    length-prefixed framing for the byte-stream peers (pipes, sockets).
``peers``
    one small class per transport: creates the link in the parent, opens its
    sender and receiver ends in the children.
``workers``
    the top-level functions the child processes run (sender, receiver,
    ping, pong, idle receiver).
``harness``
    starts the processes, enforces timeouts, gathers results into cells.
``children``
    the spawn/deadline/collect runner of the ``sync``, ``queue`` and
    ``topic`` benchmarks (one module-level body per child).
``sync``, ``queue``
    ``interlink bench sync`` and ``interlink bench queue``.
``hostinfo`` and ``report``
    the machine header, the rich table, JSON and the optional plot.
"""
