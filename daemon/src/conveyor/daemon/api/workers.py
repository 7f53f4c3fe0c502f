"""The API's worker threads: a pool that grows with the calls in progress
and shrinks when they stop.

Unary calls and the admission checks run in worker threads (see
:mod:`conveyor.daemon.api.loop`). ``concurrent.futures.ThreadPoolExecutor``
never lets a thread go: after one burst of calls its ``grpc_workers``
threads stayed for the daemon's life, with their stacks and what the
allocator kept for them. :class:`WorkerPool` starts a thread only when no
idle one is there, and a thread left idle for :data:`IDLE_TIMEOUT` seconds
exits (as trio's own worker threads do).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds a worker waits for a call before its thread exits.
IDLE_TIMEOUT = 10.0


class _Work:
    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class _Idle:
    """An idle worker, waiting to be handed work (None: exit)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.work: _Work | None = None


class WorkerPool(Executor):
    """At most ``max_workers`` threads named ``name_N``; an idle thread is
    given the next call (the one idle the shortest first, so the others
    can time out), a new thread is started only when none is idle."""

    def __init__(
        self, max_workers: int, *, name: str = "worker", idle_timeout: float = IDLE_TIMEOUT
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self._name = name
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._queue: deque[_Work] = deque()
        self._idle: list[_Idle] = []
        self._threads: set[threading.Thread] = set()
        self._shutdown = False

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        work = _Work(future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if self._idle:
                idle = self._idle.pop()
                idle.work = work
                idle.event.set()
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._worker,
                    args=(work,),
                    name=f"{self._name}_{next(self._numbers)}",
                    daemon=True,
                )
                self._threads.add(thread)
                thread.start()
            else:
                self._queue.append(work)
        return future

    def _worker(self, work: _Work) -> None:
        current = threading.current_thread()
        try:
            self._serve(work, current)
        finally:  # (already done under the lock, unless something escaped)
            with self._lock:
                self._threads.discard(current)

    def _serve(self, work: _Work, current: threading.Thread) -> None:
        """Run ``work``, then what comes, until idle too long or shut down.
        The thread stops counting under the same lock that decides it goes,
        so a call submitted meanwhile starts a thread instead of waiting."""
        while True:
            work.run()
            del work  # what the call returned is not kept alive while idle
            with self._lock:
                if self._queue:
                    work = self._queue.popleft()
                    continue
                if self._shutdown:
                    self._threads.discard(current)
                    return
                idle = _Idle()
                self._idle.append(idle)
            idle.event.wait(self.idle_timeout)
            with self._lock:
                if idle.work is None:  # timed out, or shut down
                    if idle in self._idle:
                        self._idle.remove(idle)
                    self._threads.discard(current)
                    return
                work = idle.work

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for waiting in idle:
            waiting.event.set()
        if wait:
            for thread in threads:
                thread.join()
