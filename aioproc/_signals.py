"""The signal hub: one ``loop.add_signal_handler`` per signal, fanned out to many subscribers.

Public face: :func:`subscribe` and :class:`Subscription` (re-exported by
``aioproc.signals``). Internal face for the process core: :func:`watch` and
:class:`Watch` (a synchronous callback, used for ``SIGCHLD`` in pid mode).

How a signal travels
====================

::

    kernel -> CPython's C handler (any thread)
                 |  sets the "tripped" flag, writes the signal number to the wakeup fd
                 v
              _Hub._on_raw (main thread, between two bytecodes)
                 |  appends the number to _Hub._pending (a deque) -- and nothing else
                 v
              loop reads the wakeup fd -> calls _Hub._fan_out (the add_signal_handler callback)
                 |  pops _pending in order and hands each signal to every target of that signal
                 v
              Subscription queue (+ its waiter future)  /  Watch callback

The hub registers with the loop through the public ``loop.add_signal_handler`` (that sets
the wakeup fd and tells the loop to call us) and then replaces the *Python-level* handler
with its own ``_on_raw``. The C-level handler and the wakeup fd are process-global and stay
as they are; asyncio's and uvloop's own Python-level handlers do nothing that we need.

Why the pending deque matters
=============================

asyncio (``_UnixSelectorEventLoop._handle_signal``: "Assume it's some race condition") and
uvloop both drop a wakeup byte whose signal has no handler any more. So a signal that has
already reached the process when a subscriber leaves is lost if the hub simply calls
``loop.remove_signal_handler``. With ``_on_raw``, every signal whose C handler ran is in
``_pending`` as soon as CPython runs the tripped Python handlers, and CPython runs them
inside ``signal.pthread_sigmask`` (it calls ``PyErr_CheckSignals`` before returning) and
before ``signal.signal`` swaps a handler. Closing therefore first *drains*: it runs the
tripped handlers, fans ``_pending`` out to every target, the closing one included, and only
then removes the target. This is Go's ``signal.Stop`` guarantee (golang/go#14571).

The per-loop hub lives until the loop shuts down its async generators (``asyncio.run``,
``uvloop.run``, ``asyncio.Runner`` and pytest-asyncio all do): the hub keeps a tiny async
generator registered with the loop, whose ``finally`` closes every remaining target and
gives every signal back. A hub whose loop was closed without that is abandoned (its
Python-level handlers put back if they are still ours) the next time any hub is created,
and in a forked child.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import threading
import warnings
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from types import FrameType, TracebackType
from typing import Any, Final, TypeAlias, final

import anyio

__all__ = ["DEFAULT_MAXSIZE", "Subscription", "Watch", "subscribe", "watch"]

#: A handler as ``signal.getsignal`` returns it (``None``: installed from outside Python).
_Handler: TypeAlias = "Callable[[int, FrameType | None], Any] | int | signal.Handlers | None"

#: Default bound of a subscription's queue.
DEFAULT_MAXSIZE: Final = 1024

_UNCATCHABLE: Final = frozenset({signal.SIGKILL, signal.SIGSTOP})

#: The C function behind ``signal.pthread_sigmask`` (also used by the spawn workers).
#: The public name is a Python wrapper, and a Python function runs pending signal
#: handlers on entry: a handler that raises there (the restored ``default_int_handler``
#: when another thread took a SIGINT) would abort the call before the mask changes,
#: leaving the signal blocked for good. The C function only runs handlers after it has
#: changed the mask. It also takes and returns plain ints, where the wrapper converts
#: every signal of the old mask to a ``signal.Signals`` member (64 enum lookups a call).
c_sigmask: Final[Callable[[int, Iterable[int]], set[int]]] = getattr(
    importlib.import_module("_signal"), "pthread_sigmask", signal.pthread_sigmask
)


# --------------------------------------------------------------------------- targets


class _Target:
    """Something the hub delivers signals to: a :class:`Subscription` or a :class:`Watch`."""

    __slots__ = ("_closed", "_hub", "_sigs")

    _hub: _Hub
    _sigs: tuple[signal.Signals, ...]
    _closed: bool

    def _deliver(self, sig: signal.Signals) -> None:
        """Take one signal. Called on the loop thread, in order, during fan-out."""
        raise NotImplementedError

    def _mark_closed(self) -> None:
        """Called once the hub has removed this target for good (no wake-ups on a dead loop)."""
        self._closed = True


@final
class Subscription(_Target):
    """A stream of the signals a :func:`subscribe` call asked for.

    An async context manager (closing on exit) and an async iterator of
    :class:`signal.Signals`. Not created directly: call :func:`subscribe`.

    Queue: bounded by ``maxsize``. When it is full, the *oldest* queued signal is discarded
    to make room and :attr:`dropped` grows by one, so the newest signal is always kept.

    After :meth:`aclose` the signals that were already queued (including those the close
    drained) are still returned by :meth:`get`, :meth:`get_nowait` and iteration; after
    that, :meth:`get` and :meth:`get_nowait` raise :exc:`anyio.ClosedResourceError` and
    iteration stops.
    """

    __slots__ = ("__weakref__", "_dropped", "_maxsize", "_queue", "_waiter")

    _queue: deque[signal.Signals]
    _maxsize: int
    _dropped: int
    _waiter: asyncio.Future[None] | None

    def __init__(self) -> None:
        raise TypeError("use aioproc.signals.subscribe() to create a Subscription")

    @classmethod
    def _create(cls, hub: _Hub, sigs: tuple[signal.Signals, ...], maxsize: int) -> Subscription:
        self = cls.__new__(cls)
        self._hub = hub
        self._sigs = sigs
        self._closed = False
        self._queue = deque(maxlen=maxsize)
        self._maxsize = maxsize
        self._dropped = 0
        self._waiter = None
        return self

    # -- hot path: called by _Hub._fan_out for every delivery
    def _deliver(self, sig: signal.Signals) -> None:
        if self._closed:
            return
        queue = self._queue
        if len(queue) == self._maxsize:
            self._dropped += 1  # the deque's maxlen discards the oldest on append
        queue.append(sig)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _mark_closed(self) -> None:
        self._closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            try:
                waiter.set_result(None)
            except RuntimeError:  # its loop is already closed (abandoned hub)
                pass

    # -- public API
    @property
    def signals(self) -> frozenset[signal.Signals]:
        """The signals this subscription receives."""
        return frozenset(self._sigs)

    @property
    def maxsize(self) -> int:
        """The bound of the queue."""
        return self._maxsize

    @property
    def dropped(self) -> int:
        """How many deliveries overflowed the queue (each discarded the oldest queued one)."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has run (queued signals may still be read)."""
        return self._closed

    def get_nowait(self) -> signal.Signals:
        """Return the oldest queued signal.

        Raises :exc:`asyncio.QueueEmpty` if none is queued, or
        :exc:`anyio.ClosedResourceError` if none is queued and the subscription is closed.
        """
        if self._queue:
            return self._queue.popleft()
        if self._closed:
            raise anyio.ClosedResourceError("the signal subscription is closed")
        raise asyncio.QueueEmpty

    async def get(self) -> signal.Signals:
        """Wait for the next signal and return it.

        Raises :exc:`anyio.ClosedResourceError` once the subscription is closed and its queue
        is empty (also when it is closed while this call waits). Only one task may wait in
        :meth:`get` at a time (two consumers should subscribe twice); a second concurrent
        call raises :exc:`RuntimeError`.
        """
        queue = self._queue
        while not queue:
            if self._closed:
                raise anyio.ClosedResourceError("the signal subscription is closed")
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting in get() on this subscription")
            loop = asyncio.get_running_loop()
            if loop is not self._hub._loop_ref():
                raise RuntimeError("this subscription belongs to another event loop")
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return queue.popleft()

    async def aclose(self) -> None:
        """Stop the subscription.

        Guarantees: every signal this subscription wants that reached the process before
        this call is queued before it returns, and none is queued after it returns. If it
        was the last subscriber of a signal, the handler that was installed before the hub
        took the signal is put back, and a signal arriving during that hand-over is either
        queued here or handled by the restored disposition (for ``SIGINT`` this may raise
        :exc:`KeyboardInterrupt` out of this call). Closing twice is a no-op. Nothing in
        here awaits, so it cannot be interrupted by cancellation.
        """
        if self._closed:
            return
        self._hub._detach((self,))

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> signal.Signals:
        if self._queue:
            return self._queue.popleft()
        try:
            return await self.get()
        except anyio.ClosedResourceError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(sig.name for sig in self._sigs)
        state = "closed" if self._closed else "open"
        return f"<Subscription [{names}] {state} queued={len(self._queue)} dropped={self._dropped}>"


@final
class Watch(_Target):
    """Internal: a synchronous callback for one signal (see :func:`watch`)."""

    __slots__ = ("_callback",)

    _callback: Callable[[signal.Signals], None]

    def __init__(self) -> None:
        raise TypeError("use aioproc._signals.watch() to create a Watch")

    @classmethod
    def _create(
        cls, hub: _Hub, sig: signal.Signals, callback: Callable[[signal.Signals], None]
    ) -> Watch:
        self = cls.__new__(cls)
        self._hub = hub
        self._sigs = (sig,)
        self._closed = False
        self._callback = callback
        return self

    def _deliver(self, sig: signal.Signals) -> None:
        if self._closed:
            return
        try:
            self._callback(sig)
        except Exception as exc:
            # One failing callback must not starve the targets after it.
            self._hub._report(exc, self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def close(self) -> None:
        """Stop watching; same guarantees as :meth:`Subscription.aclose`.

        Every pending delivery reaches the callback before this returns (the callback may
        therefore run inside this call), and it is never called afterwards. Idempotent.
        """
        if self._closed:
            return
        self._hub._detach((self,))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Watch {self._sigs[0].name} {self._callback!r} {state}>"


# --------------------------------------------------------------------------- the hub


@final
class _Entry:
    """The hub's state for one signal it has taken over."""

    __slots__ = ("handler", "previous", "sig", "targets", "via_loop")

    def __init__(
        self, sig: signal.Signals, previous: _Handler, handler: _Handler, via_loop: bool
    ) -> None:
        self.sig = sig
        #: What ``signal.getsignal`` returned before the hub took the signal.
        self.previous = previous
        #: The Python-level handler the hub installed (to tell whether it is still ours).
        self.handler = handler
        #: False when the loop refused ``add_signal_handler`` (uvloop reserves SIGCHLD).
        self.via_loop = via_loop
        #: Subscribers in subscription order; replaced, never mutated, so fan-out can
        #: iterate a snapshot while callbacks subscribe or close.
        self.targets: tuple[_Target, ...] = ()


@final
class _Waker:
    """Python-level handler for a signal the loop would not take (uvloop: SIGCHLD).

    uvloop refuses ``add_signal_handler(SIGCHLD)``, but it still reads the wakeup fd and
    runs the Python-level handlers, so this handler schedules the fan-out itself. It is
    the only handler that does more than append; ``call_soon_threadsafe`` only appends a
    handle and pokes libuv's async handle, and a handler runs in the main thread, where
    calling it is legal anyway.
    """

    __slots__ = ("_append", "_fan_out", "_loop_ref", "scheduled")

    def __init__(self, hub: _Hub) -> None:
        self._append = hub._pending.append
        self._loop_ref = hub._loop_ref
        self._fan_out = hub._fan_out_woken
        self.scheduled = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self._append(signum)
        if self.scheduled:
            return
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            return
        self.scheduled = True
        try:
            loop.call_soon_threadsafe(self._fan_out)
        except RuntimeError:  # closed between the check and the call: never raise here
            self.scheduled = False


@final
class _Hub:
    """Per-loop owner of the signals: one loop handler per signal, many targets."""

    __slots__ = (
        "__weakref__",
        "_agen",
        "_closing",
        "_entries",
        "_loop_ref",
        "_on_raw",
        "_owed",
        "_owed_sig",
        "_pending",
        "_waker",
        "retired",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak, so that neither the registry nor a subscription keeps a dead loop alive.
        self._loop_ref: weakref.ReferenceType[asyncio.AbstractEventLoop] = weakref.ref(loop)
        #: Signal numbers appended by the Python-level handler, in arrival order.
        self._pending: deque[int] = deque()
        #: Targets still owed ``_owed_sig`` by the fan-out in progress (see _fan_out).
        self._owed: deque[_Target] = deque()
        self._owed_sig = signal.SIGTERM
        self._entries: dict[int, _Entry] = {}
        #: Targets inside a _detach call (so that a nested close skips them).
        self._closing: set[_Target] = set()
        self._waker: _Waker | None = None
        self.retired = False

        append = self._pending.append

        def on_raw(signum: int, frame: FrameType | None) -> None:
            # Runs in the main thread between two bytecodes of whatever code is running,
            # the hub's own included. deque.append is atomic with respect to that, so this
            # is the one thing it does. (It closes over the deque only: the signal table
            # must not keep the hub or the loop alive.)
            append(signum)

        self._on_raw: Callable[[int, FrameType | None], None] = on_raw
        self._agen: AsyncGenerator[None, None] | None = None
        self._start_lifetime()

    # -- lifetime
    async def _lifetime(self) -> AsyncGenerator[None, None]:
        # Registered with the loop's async generator hooks by its first step, so the
        # loop's shutdown_asyncgens() (asyncio.run, uvloop.run, Runner.close) closes it,
        # and closing it gives every signal back while the loop can still do so properly.
        try:
            yield
        finally:
            self._shutdown()

    def _start_lifetime(self) -> None:
        agen = self._lifetime()
        with warnings.catch_warnings():
            # asyncio warns if the loop already ran shutdown_asyncgens(); the abandonment
            # path (next hub creation, or the fork hook) covers that loop instead.
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                agen.asend(None).send(None)
            except StopIteration:
                pass  # reached the ``yield``
        self._agen = agen

    def _end_lifetime(self) -> None:
        agen, self._agen = self._agen, None
        if agen is not None:
            try:
                agen.aclose().send(None)
            except StopIteration:
                pass  # its finally ran _shutdown(), which is a no-op once retired

    # -- delivery
    def _fan_out(self) -> None:
        """Deliver every pending signal, in order, to every target of that signal.

        The loop's signal callback, and the drain step of every close. Re-entrant: a Watch
        callback may close targets or subscribe, and a close drains by calling this. The
        targets still owed the current signal are kept in ``self._owed`` rather than a local
        iterator, so a nested call finishes the current signal for everyone before it starts
        the next one: every target sees signals in arrival order, and a target closed by a
        callback still gets the signal being delivered (it reached the process before the
        close).
        """
        pending = self._pending
        owed = self._owed
        entries = self._entries
        while True:
            while owed:
                owed.popleft()._deliver(self._owed_sig)
            if not pending:
                return
            entry = entries.get(pending.popleft())
            if entry is not None:
                self._owed_sig = entry.sig
                owed.extend(entry.targets)

    def _fan_out_woken(self) -> None:
        """The fan-out as scheduled by a :class:`_Waker`."""
        if self._waker is not None:
            # Reset before draining: a signal that lands while we drain schedules another
            # call (harmless) rather than being left behind.
            self._waker.scheduled = False
        self._fan_out()

    def _flush(self) -> frozenset[int]:
        """Run every tripped Python-level handler, then fan out. Returns the signal mask.

        ``pthread_sigmask`` calls ``PyErr_CheckSignals`` before returning, so every signal
        whose C handler has already run has had ``_on_raw`` append it by the time it returns.
        Blocking nothing leaves the mask unchanged; we use the old mask it reports.
        """
        mask = frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ()))
        self._fan_out()
        return mask

    def _report(self, exc: Exception, target: _Target) -> None:
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_exception_handler(
                {"message": f"Exception in signal callback of {target!r}", "exception": exc}
            )
        except Exception:
            pass

    # -- registration
    def _attach(self, target: _Target) -> None:
        """Register ``target`` for its signals, taking over the signals nobody has yet."""
        new = [sig for sig in target._sigs if sig not in self._entries]
        if new:
            self._install(new)
        for sig in target._sigs:
            entry = self._entries[sig]
            entry.targets = (*entry.targets, target)

    def _install(self, sigs: list[signal.Signals]) -> None:
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            raise RuntimeError("the event loop is closed")
        # Block the signals while we swap handlers: between add_signal_handler and our
        # signal.signal the loop's own no-op handler is installed, and a signal landing
        # there would reach neither the hub nor the previous disposition. Blocked, it
        # stays pending and is delivered to _on_raw when we unblock below. (The old mask
        # first, and the unblock list in advance, as in _detach.)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        unblock = [sig for sig in sigs if sig not in old_mask]
        installed: list[signal.Signals] = []
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
            for sig in sigs:
                previous = signal.getsignal(sig)
                via_loop = True
                try:
                    loop.add_signal_handler(sig, self._fan_out)
                except RuntimeError:
                    if sig != signal.SIGCHLD:
                        raise
                    via_loop = False  # uvloop keeps SIGCHLD for its own child watching
                else:
                    _quiet_wakeup_fd(loop)
                handler: Callable[[int, FrameType | None], None]
                if via_loop:
                    handler = self._on_raw
                else:
                    if self._waker is None:
                        self._waker = _Waker(self)
                    handler = self._waker
                self._entries[sig] = _Entry(sig, previous, handler, via_loop)
                installed.append(sig)
                # Replace only the Python-level handler: the C handler and the wakeup fd
                # the loop set up stay. signal.signal drops SA_RESTART, which the loop had
                # set; put it back.
                signal.signal(sig, handler)
                signal.siginterrupt(sig, False)
            # A signal another thread took while _quiet_wakeup_fd had no wakeup fd
            # set is in _pending but woke nobody: fan out once, soon.
            loop.call_soon(self._fan_out)
        except BaseException:
            for sig in installed:
                entry = self._entries.pop(sig)
                try:
                    self._release(entry)
                except Exception:
                    pass
            raise
        finally:
            if unblock:
                c_sigmask(signal.SIG_UNBLOCK, unblock)

    def _release(self, entry: _Entry) -> None:
        """Give one signal back: remove the loop handler, restore the previous handler."""
        sig = entry.sig
        current = signal.getsignal(sig)
        if entry.via_loop:
            loop = self._loop_ref()
            if loop is not None:
                # Sets SIG_DFL (default_int_handler for SIGINT) at the Python level; our
                # caller has the signal blocked in this thread, and signal.signal runs the
                # tripped handlers (ours, still) before it swaps. Known limit: until the
                # signal.signal below, another thread that does not block the signal can
                # take it under SIG_DFL (a microsecond or two; docs/signals.md, Limits).
                loop.remove_signal_handler(sig)
        # If someone replaced our handler meanwhile, theirs is what to put back.
        restore = entry.previous if current is entry.handler else current
        # None: the previous handler was not installed from Python; the best we can do
        # is the default (which is also what the loop would have left).
        signal.signal(sig, signal.SIG_DFL if restore is None else restore)

    def _detach(self, targets: Iterable[_Target]) -> None:
        """Close ``targets``, draining first; give back the signals nobody else wants."""
        # Skip targets already closed, or being closed by an outer call (a Watch callback
        # may close things while a close drains).
        closing = list(
            dict.fromkeys(t for t in targets if not t._closed and t not in self._closing)
        )
        if not closing:
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal subscriptions can only be closed in the main thread")
        closing_set = set(closing)
        sigs = list(dict.fromkeys(sig for t in closing for sig in t._sigs))
        # (1) Drain: every signal whose C handler already ran is appended to _pending by
        # the check inside pthread_sigmask and fanned out to all targets, the closing ones
        # included. That is guarantee (2): a signal that reached the process before the
        # close is queued before the close returns. If a foreign Python handler raises
        # here (KeyboardInterrupt), nothing has changed yet and the targets stay open.
        self._closing |= closing_set
        try:
            old_mask = self._flush()
        except BaseException:
            self._closing -= closing_set
            raise
        try:
            blocked = [sig for sig in sigs if self._only_closing(sig, closing_set)]
            # Computed now: nothing between the restore and the unblock may run Python code
            # that a KeyboardInterrupt could cut short (see (4)).
            unblock = [sig for sig in blocked if sig not in old_mask]
        except BaseException:
            self._closing -= closing_set
            raise
        released: list[signal.Signals] = []
        try:
            try:
                if blocked:
                    # (2) Hand-over of the signals nobody else wants. Block them in this
                    # thread first: from here on one sent to us stays pending in the kernel
                    # instead of hitting a handler that is being swapped. The check inside
                    # this call is a second drain point for what arrived since (1).
                    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
                    self._fan_out()
                    # (3) Remove the loop handler and restore the previous handler. Both
                    # signal.signal calls involved run the tripped handlers before they
                    # swap, so a signal that another thread took meanwhile is appended by
                    # our _on_raw while it is still installed, and drained in (5).
                    # (Re-check "nobody else": a Watch callback may have subscribed.)
                    errors: list[Exception] = []
                    for sig in blocked:
                        entry = self._entries.get(sig)
                        if entry is None or not self._only_closing(sig, closing_set):
                            continue
                        released.append(sig)
                        try:
                            self._release(entry)
                        except Exception as exc:
                            errors.append(exc)
                    if errors:
                        raise errors[0]
            finally:
                # (4) Unblock, first thing, whatever happened. A signal that arrived during
                # the hand-over is delivered now to the restored disposition: the user's
                # handler, SIG_IGN, death by SIG_DFL, or KeyboardInterrupt for SIGINT
                # (raised out of this call). Not lost either way. Once restored, that
                # handler may also run (and raise) at any bytecode boundary if another
                # thread took the signal, so this is a bare C call (see c_sigmask)
                # with its argument computed in advance: a KeyboardInterrupt raised in (3)
                # lands here, and the signal is never left blocked.
                if unblock:
                    c_sigmask(signal.SIG_UNBLOCK, unblock)
        finally:
            try:
                # (5) Drain again: what _on_raw appended during (3) reaches the closing
                # targets, which are still registered. (Unblocking cannot add to it for
                # the released signals: _on_raw is no longer their handler.)
                self._fan_out()
            finally:
                # (6) Remove the targets. No fan-out can reach them after this: they are
                # gone from every entry, and _owed is empty because every fan-out above
                # ran to the end. (_closed also makes _deliver a no-op, should an
                # exception have cut a drain short.)
                for sig in sigs:
                    entry = self._entries.get(sig)
                    if entry is None:
                        continue
                    entry.targets = tuple(t for t in entry.targets if t not in closing_set)
                    if sig in released:
                        del self._entries[sig]
                self._closing -= closing_set
                for target in closing:
                    target._mark_closed()

    def _only_closing(self, sig: int, closing: set[_Target]) -> bool:
        """Whether every target of ``sig`` is being closed (so the signal goes back)."""
        entry = self._entries.get(sig)
        return entry is not None and all(t in closing for t in entry.targets)

    def _shutdown(self) -> None:
        """The loop is shutting down: close every target and give every signal back."""
        if self.retired:
            return
        self.retired = True
        self._agen = None  # we may be running inside it; it is finishing either way
        loop = self._loop_ref()
        if loop is not None and _hubs.get(loop) is self:
            del _hubs[loop]
        targets = [t for entry in self._entries.values() for t in entry.targets]
        if not targets:
            return
        if threading.current_thread() is not threading.main_thread():
            self._abandon()
            return
        try:
            self._detach(targets)
        except Exception as exc:
            self._report(exc, targets[0])

    def _abandon(self) -> None:
        """Forget everything without the loop (it is closed, or we are a forked child).

        Python-level handlers that are still ours are replaced by the previous ones, so a
        dead hub does not swallow signals.
        """
        self.retired = True
        entries = list(self._entries.values())
        self._entries.clear()
        self._pending.clear()
        self._owed.clear()
        main = threading.current_thread() is threading.main_thread()
        for entry in entries:
            if main:
                try:
                    if signal.getsignal(entry.sig) is entry.handler:
                        previous = entry.previous
                        signal.signal(entry.sig, signal.SIG_DFL if previous is None else previous)
                except (OSError, ValueError, RuntimeError):
                    pass
            for target in entry.targets:
                target._closed = True  # no wake-up: the waiter belongs to a dead loop
        self._end_lifetime()


def _quiet_wakeup_fd(loop: asyncio.AbstractEventLoop) -> None:
    """Keep the loop's wakeup fd, but without CPython's "buffer full" report.

    asyncio registers its wakeup socket (again, on every add_signal_handler) with
    warn_on_full_buffer=True, so when signals arrive faster than the loop reads the
    socket (a hundred children exiting at once in pid mode: one SIGCHLD each),
    CPython prints "Exception ignored when trying to write to the signal wakeup fd"
    once per lost byte. Nothing is lost for the hub, which counts arrivals in its
    deque, not by those bytes: the report is noise, and on CPython 3.13 the report
    itself can deadlock the signal handler (docs/signals.md, Limits). So we put the
    same descriptor back with the warning off.

    Between the two set_wakeup_fd calls (a microsecond) no wakeup fd is set: a
    signal taken then by another thread trips its Python handler without waking
    the loop. The hub's own signals are blocked in this thread here (see _install)
    and anything that tripped is fanned out by the call_soon below; a foreign
    loop.add_signal_handler callback could see its wake-up delayed until the next
    one. uvloop does not ask for the warning; there this changes nothing.
    """
    fd = signal.set_wakeup_fd(-1)
    if fd == -1:
        return
    signal.set_wakeup_fd(fd, warn_on_full_buffer=False)


# --------------------------------------------------------------------------- registry

#: One hub per loop. Strong values: a hub must outlive the calls that created it. A hub
#: leaves when its loop shuts down its async generators, or is abandoned when found closed.
_hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}


def _purge_closed_loops() -> None:
    for loop, hub in list(_hubs.items()):
        if loop.is_closed():
            del _hubs[loop]
            hub._abandon()


def _running_hub(what: str) -> _Hub:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"{what} must be called from the main thread: Python runs signal handlers there"
        )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{what} needs a running event loop (call it from a coroutine or a loop callback)"
        ) from None
    hub = _hubs.get(loop)
    if hub is None or hub.retired:
        _purge_closed_loops()
        hub = _hubs[loop] = _Hub(loop)
    return hub


def _after_fork_in_child() -> None:
    # The child has no use for the parent's subscriptions, and a handler that only
    # appends to a deque nobody reads would swallow its signals (SIGTERM sent by
    # multiprocessing, say). Give the signals back and forget the hubs.
    hubs = list(_hubs.values())
    _hubs.clear()
    for hub in hubs:
        try:
            hub._abandon()
        except Exception:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_signal(signum: object) -> signal.Signals:
    if isinstance(signum, bool) or not isinstance(signum, int):
        raise TypeError(f"a signal number must be an int, not {type(signum).__name__}")
    try:
        sig = signal.Signals(signum)
    except ValueError:
        raise ValueError(f"{signum} is not a valid signal number") from None
    if sig in _UNCATCHABLE:
        raise ValueError(f"{sig.name} cannot be caught")
    return sig


# --------------------------------------------------------------------------- entry points


def subscribe(*signums: int, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
    """Start receiving ``signums`` on the running loop; return the :class:`Subscription`.

    The subscription is registered when this returns: a signal sent afterwards is
    received. Use it as ``async with subscribe(signal.SIGTERM) as sub:`` so that it is
    closed (:meth:`Subscription.aclose`) on exit.

    Raises :exc:`ValueError` for an invalid signal number, an uncatchable signal
    (``SIGKILL``, ``SIGSTOP``), no signal at all, or ``maxsize < 1``; :exc:`TypeError` for a
    non-integer; :exc:`RuntimeError` outside the main thread or without a running loop.
    """
    if not signums:
        raise ValueError("subscribe() needs at least one signal")
    sigs = tuple(dict.fromkeys(_check_signal(s) for s in signums))
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
    if maxsize < 1:
        raise ValueError(f"maxsize must be at least 1, got {maxsize}")
    hub = _running_hub("aioproc.signals.subscribe()")
    sub = Subscription._create(hub, sigs, maxsize)
    hub._attach(sub)
    return sub


def watch(signum: int, callback: Callable[[signal.Signals], None]) -> Watch:
    """Internal: call ``callback(sig)`` on the loop thread for every delivery of ``signum``.

    The callback runs synchronously during fan-out, in order with the queue subscribers of
    the same signal; an exception from it goes to ``loop.call_exception_handler`` and does
    not stop the fan-out. Same requirements and errors as :func:`subscribe`.
    :meth:`Watch.close` is synchronous and drains like :meth:`Subscription.aclose`.
    """
    sig = _check_signal(signum)
    if not callable(callback):
        raise TypeError("callback must be callable")
    hub = _running_hub("aioproc._signals.watch()")
    target = Watch._create(hub, sig, callback)
    hub._attach(target)
    return target
