"""The control endpoint of a running supervisor: ``aioproc ctl`` talks to it.

Layering: this package sits above :mod:`aioproc.supervisor` and uses only its
public API; the supervisor never imports it. ``aioproc.control`` re-exports the
public part; ``aioproc run`` serves it; ``aioproc ctl`` is its client.

* ``_protocol.py``: the JSON-lines protocol (version, bounds, error codes);
* ``_socket.py``: the unix socket: created 0600 atomically, stale ones replaced,
  live ones refused, peers identified by ``SO_PEERCRED``;
* ``_operations.py``: :class:`Operations`, what a request does to a :class:`Supervisor`
  (shared with the HTTP server, ``aioproc/_http``);
* ``_server.py``: :class:`ControlServer`, serving one :class:`Supervisor` on the socket;
* ``_client.py``: :class:`Client`, a small blocking client.

See ``docs/control.md``.
"""
