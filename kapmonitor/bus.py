"""In-process fan-out of model messages from device threads to subscribers.

Device threads call ``publish`` with a batch of messages; every subscriber's callback runs
in the publishing thread, so a subscriber must be quick: the recorder only enqueues, the
alarm engine evaluates a few comparisons, the live buffers copy into numpy rings. Anything
slower puts a bounded queue in front of itself (``QueueSubscriber``).

Subscribers are *critical* or *best-effort* (CONVENTIONS 6, after bluesky's callbacks):
an exception in a critical one (recorder, alarm engine) is never swallowed: it is counted,
logged, and reported to ``on_critical_error`` so the session can raise a technical alarm;
the publisher carries on so the other subscribers still get the data. An exception in a
best-effort one (a plot, a panel) is logged once per burst and counted.

The subscriber list is copy-on-write: ``publish`` reads an immutable tuple without taking
a lock, so publishing from several device threads never contends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .model import Message

__all__ = ["Bus", "Subscription"]

log = logging.getLogger(__name__)

Callback = Callable[[Sequence[Message]], None]


@dataclass(eq=False)
class Subscription:
    name: str
    callback: Callback
    critical: bool
    errors: int = 0
    delivered: int = 0
    _bus: Bus | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.unsubscribe(self)
            self._bus = None


class Bus:
    def __init__(
        self, on_critical_error: Callable[[Subscription, BaseException], None] | None = None
    ) -> None:
        self._subs: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        self.on_critical_error = on_critical_error
        self.published = 0

    def subscribe(self, callback: Callback, *, name: str, critical: bool = False) -> Subscription:
        sub = Subscription(name=name, callback=callback, critical=critical, _bus=self)
        with self._lock:
            self._subs = (*self._subs, sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subs

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        self.published += len(messages)
        for sub in self._subs:
            try:
                sub.callback(messages)
                sub.delivered += len(messages)
            except Exception as exc:
                sub.errors += 1
                if sub.critical:
                    log.exception("critical subscriber %r failed", sub.name)
                    handler = self.on_critical_error
                    if handler is not None:
                        try:
                            handler(sub, exc)
                        except Exception:
                            log.exception("on_critical_error handler failed")
                elif sub.errors == 1 or sub.errors % 1000 == 0:
                    log.exception("best-effort subscriber %r failed (%d times)",
                                  sub.name, sub.errors)

