"""``/metrics``: the supervisor's state in Prometheus' text format (prometheus_client).

A custom collector builds every family at scrape time from the supervisor's
status (nothing is kept between scrapes, so a service removed by a reload
simply disappears); ``prometheus_client.generate_latest`` writes them out.
A registry of our own, not the global one: an application embedding a
supervisor keeps its own metrics apart.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from .._control._operations import Operations
from ..supervisor import ServiceState
from ._usage import Usage

__all__ = ["CONTENT_TYPE", "SupervisorCollector", "scrape"]

#: What generate_latest writes: the classic text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_UP = (ServiceState.STARTING, ServiceState.RUNNING, ServiceState.STOPPING)


class SupervisorCollector:
    """The ``aioproc_*`` families of one supervisor, built at each collect()."""

    def __init__(self, ops: Operations, usage: Callable[[], dict[str, Usage]]) -> None:
        self._ops = ops
        self._usage = usage

    def collect(self) -> Iterator[Metric]:
        sup = self._ops.supervisor
        statuses = sup.status()
        usage: dict[str, Usage] = self._usage()
        label = ["service"]
        up = GaugeMetricFamily(
            "aioproc_service_up", "1 while the service has a live process, else 0.", labels=label
        )
        ready = GaugeMetricFamily(
            "aioproc_service_ready", "1 while the service is running and ready.", labels=label
        )
        restarts = CounterMetricFamily(
            "aioproc_service_restarts", "Restarts of the service by its policy.", labels=label
        )
        changes = CounterMetricFamily(
            "aioproc_service_state_changes",
            "State changes of the service seen by this server.",
            labels=label,
        )
        last_exit = GaugeMetricFamily(
            "aioproc_service_last_exit_code",
            "Exit code of the service's last run (-N: killed by signal N); absent before one.",
            labels=label,
        )
        cpu = CounterMetricFamily(
            "aioproc_service_cpu_seconds",
            "CPU time (user + system, reaped children included) of the service's processes.",
            labels=label,
        )
        rss = GaugeMetricFamily(
            "aioproc_service_resident_memory_bytes",
            "Resident memory summed over the service's processes.",
            labels=label,
        )
        for name, st in statuses.items():
            up.add_metric([name], 1.0 if st.state in _UP and st.pid is not None else 0.0)
            ready.add_metric([name], 1.0 if st.state is ServiceState.RUNNING else 0.0)
            restarts.add_metric([name], float(st.restarts))
            changes.add_metric([name], float(self._ops.state_changes.get(name, 0)))
            last = st.last_status
            if last is not None:
                code = last.exit_code if last.signal is None else -int(last.signal)
                if code is not None:
                    last_exit.add_metric([name], float(code))
            seconds, resident = usage.get(name, (0.0, 0))
            cpu.add_metric([name], seconds)
            rss.add_metric([name], float(resident))
        yield from (up, ready, restarts, changes, last_exit, cpu, rss)
        info = GaugeMetricFamily(
            "aioproc_build_info",
            "aioproc's version and runtime; always 1.",
            labels=["version", "python", "implementation"],
        )
        info.add_metric([__version__, platform.python_version(), sys.implementation.name], 1.0)
        yield info


def scrape(collector: SupervisorCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
