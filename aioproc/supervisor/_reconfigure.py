"""What :meth:`Supervisor.reconfigure` changes: the difference between two service sets.

A service is *unchanged* when every option of the new :class:`Service` equals the
old one's (``argv``, ``env``, ``ready``, policies, ... compared by value; a callable
``output`` or ``ready`` by identity). Unchanged services keep running, untouched;
changed ones are stopped and started again with their new definition; removed ones
are stopped and forgotten; added ones are started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ._service import Service

__all__ = ["Reconfigured", "diff", "same_service"]


@dataclasses.dataclass(frozen=True)
class Reconfigured:
    """What :meth:`Supervisor.reconfigure` did, by service name (each in config order)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


def same_service(a: Service, b: Service) -> bool:
    """Whether two services have the same definition (every option equal)."""
    return type(a) is type(b) and vars(a) == vars(b)


def diff(old: Mapping[str, Service], new: Sequence[Service]) -> Reconfigured:
    names = {s.name for s in new}
    added, changed, unchanged = [], [], []
    for service in new:
        before = old.get(service.name)
        if before is None:
            added.append(service.name)
        elif same_service(before, service):
            unchanged.append(service.name)
        else:
            changed.append(service.name)
    removed = [name for name in old if name not in names]
    return Reconfigured(tuple(added), tuple(removed), tuple(changed), tuple(unchanged))
