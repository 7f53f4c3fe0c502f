"""The API's worker pool: threads start only when none is idle, are
reused, never exceed the bound, and exit when idle."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.daemon.api.workers import WorkerPool


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_calls_run_in_named_threads_and_return_or_raise() -> None:
    pool = WorkerPool(4, name="grpc")
    try:
        assert pool.submit(divmod, 7, 2).result(5) == (3, 1)
        assert pool.submit(int, "ff", base=16).result(5) == 255
        assert pool.submit(lambda: threading.current_thread().name).result(5).startswith("grpc_")
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
    finally:
        pool.shutdown()


def test_an_idle_thread_is_reused_instead_of_a_new_one() -> None:
    pool = WorkerPool(8)
    try:
        names = set()
        for _ in range(20):
            names.add(pool.submit(lambda: threading.current_thread().name).result(5))
            _wait_for(lambda: len(pool._idle) == 1)  # the worker is back waiting
        assert len(names) == 1 and pool.threads == 1
    finally:
        pool.shutdown()


def test_calls_beyond_the_bound_wait_for_a_thread() -> None:
    pool = WorkerPool(3)
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def hold() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1

    try:
        futures = [pool.submit(hold) for _ in range(10)]
        _wait_for(lambda: running == 3)
        assert pool.threads == 3 and not any(f.done() for f in futures)
        release.set()
        for future in futures:
            future.result(5)
        assert most == 3 and pool.threads == 3
    finally:
        pool.shutdown()


def test_idle_threads_exit_after_the_timeout_and_come_back_on_demand() -> None:
    pool = WorkerPool(4, idle_timeout=0.1)
    release = threading.Event()
    try:
        futures = [pool.submit(release.wait, 5) for _ in range(4)]
        _wait_for(lambda: pool.threads == 4)
        release.set()
        assert all(f.result(5) for f in futures)
        _wait_for(lambda: pool.threads == 0)
        assert not [t for t in threading.enumerate() if t.name.startswith("worker_")]
        assert pool.submit(lambda: 7).result(5) == 7
    finally:
        pool.shutdown()


def test_shutdown_joins_the_threads_and_cancels_what_waits() -> None:
    pool = WorkerPool(1)
    release = threading.Event()
    first = pool.submit(release.wait, 5)
    queued = pool.submit(lambda: "never")
    _wait_for(lambda: pool.threads == 1)
    threading.Timer(0.1, release.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) is True and queued.cancelled() and pool.threads == 0
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_shutdown_lets_idle_threads_go_at_once() -> None:
    pool = WorkerPool(2, idle_timeout=60)
    pool.submit(lambda: None).result(5)
    _wait_for(lambda: len(pool._idle) == 1)
    started = time.monotonic()
    pool.shutdown(wait=True)
    assert time.monotonic() - started < 5 and pool.threads == 0


def test_a_call_submitted_while_the_threads_time_out_runs() -> None:
    # both threads were busy, then wait just about their idle timeout: the
    # next call often comes while each is deciding to go, and must not wait
    # in the queue for a thread that is leaving
    pool = WorkerPool(2, idle_timeout=0.002)
    try:
        for n in range(150):
            busy = [pool.submit(time.sleep, 0.001) for _ in range(2)]
            for future in busy:
                future.result(5)
            time.sleep(0.0015 + 0.00001 * n)
            assert pool.submit(abs, -n).result(5) == n
        assert pool.threads <= 2
    finally:
        pool.shutdown()
