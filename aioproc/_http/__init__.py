"""The HTTP face of a supervisor: JSON API, Prometheus metrics, probes and a status page.

Layering: this package sits above :mod:`aioproc.supervisor` and
:mod:`aioproc._control` (whose :class:`~aioproc._control._operations.Operations`
it serves); the core and the supervisor never import it. It needs the ``http``
extra (aiohttp for the server, prometheus_client for the metrics format).
``aioproc.http`` re-exports the public part; ``aioproc run --http`` serves it.

* ``_server.py``: :class:`HttpServer`, its routes, the token/Host/Origin checks and bounds;
* ``_metrics.py``: the Prometheus collector;
* ``_usage.py``: CPU and memory per service from ``/proc``;
* ``_openapi.py``: the OpenAPI document;
* ``page.html``: the status page (package data; no build step, no CDN).

See ``docs/http.md``.
"""
