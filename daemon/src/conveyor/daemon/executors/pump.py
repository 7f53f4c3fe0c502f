"""One thread that copies the output of every running stage process into
its log.

A stage process writes to a pipe; :class:`OutputPump` reads all of the
daemon's stage pipes from a single thread (``epoll``) and appends what it
reads to each stage's log through the stage's
:class:`~conveyor.daemon.executors.base.OutputWriter`, so the trio loop never
touches the files, and starting a stage costs no thread of its own (one
thread per stage used to be started and handed work for every stage).

What a stage's output costs the trio loop: the log's byte counts arrive in
batches (see :class:`~conveyor.daemon.executors.base.LogOutput`), and one
callback when the pipe is done with. Starting a feed wakes no thread: the
trio side adds the pipe to the pump's epoll set itself (``epoll_ctl`` is
safe while another thread waits), and the pump opens the log when the
first bytes or the pipe's end arrive. Finishing a feed wakes the pump only
when it still holds the pipe (usually it saw the pipe's end already).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import threading
from collections import deque

import trio

from conveyor.daemon.executors.base import OutputWriter, StageOutput
from conveyor.daemon.logstore import CHUNK

log = logging.getLogger(__name__)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Pipe capacity asked for (the default is 64 KiB; Linux allows 1 MiB).
PIPE_SIZE = 1 << 20


class Feed:
    """One pipe being copied into one stage output.

    :attr:`done` is set (on the trio loop) once the pump has let go of the
    pipe: at its end, after :meth:`OutputPump.finish`, or when the output
    failed; :attr:`error` then says why it failed, if it did.
    """

    def __init__(self, rfd: int, output: StageOutput, token: trio.lowlevel.TrioToken) -> None:
        self.rfd = rfd
        self.output = output
        self.token = token
        self.done = trio.Event()
        self.error: OSError | None = None
        self.writer: OutputWriter | None = None
        #: Set in the pump thread (under the pump's lock) once it let go of
        #: the pipe; :attr:`done` is set soon after, on the loop.
        self.closed = False
        #: Set in the pump thread: the output failed and the trio side must
        #: stop waiting for the process (see :meth:`OutputPump.start`).
        self.on_error: trio.CancelScope | None = None


class OutputPump:
    """Copies stage pipes into stage outputs, all in one thread.

    The thread starts with the first feed and lives as long as the process
    (a daemon thread). Feeds of several trio runs may share it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Feeds to finish (see :meth:`finish`), for the pump thread.
        self._finishing: deque[Feed] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._feeds: dict[int, Feed] = {}
        self._buffer = bytearray(CHUNK)
        self._thread: threading.Thread | None = None

    # -- the trio side -----------------------------------------------------------

    def start(self, rfd: int, output: StageOutput, on_error: trio.CancelScope) -> Feed:
        """Start copying ``rfd`` (the read end of a stage's pipe) into
        ``output``; ``on_error`` is cancelled if the output cannot take it
        (a full disk). Call on the trio loop the output belongs to; the
        caller keeps ``rfd`` open until the feed is :attr:`Feed.done`."""
        feed = Feed(rfd, output, trio.lowlevel.current_trio_token())
        feed.on_error = on_error
        with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups
            fcntl.fcntl(rfd, F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(rfd, False)
        with self._lock:
            self._feeds[rfd] = feed
            self._ensure_thread()
        self._epoll.register(rfd, select.EPOLLIN)
        return feed

    def finish(self, feed: Feed) -> None:
        """Copy what the pipe holds now, then let go of it, even if a
        process that escaped its group still holds its write end."""
        with self._lock:
            if feed.closed:
                return
            self._finishing.append(feed)
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            os.write(self._wake_w, b"\0")

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="conveyord log pump", daemon=True
            )
            self._thread.start()

    # -- the pump thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            for fd, _ in self._epoll.poll():
                if fd == self._wake_r:
                    self._take_finishing()
                    continue
                with self._lock:
                    feed = self._feeds.get(fd)
                if feed is not None:
                    self._copy(feed, drain=False)

    def _take_finishing(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while True:
            with self._lock:
                if not self._finishing:
                    return
                feed = self._finishing.popleft()
            if not feed.closed:
                self._copy(feed, drain=True)
                if not feed.closed:
                    self._close(feed)

    def _copy(self, feed: Feed, *, drain: bool) -> None:
        """Copy one chunk (everything there is, with ``drain``); close the
        feed at the pipe's end or when its output fails. The output's
        writer is opened first (the log is made when the stage first runs)."""
        if feed.writer is None:
            try:
                feed.writer = feed.output.open_writer()
            except OSError as exc:
                self._fail(feed, exc)
                self._close(feed)
                return
        buffer, writer = self._buffer, feed.writer
        while True:
            try:
                nbytes = os.readv(feed.rfd, [buffer])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                log.warning("cannot read a stage's output: %s", exc)
                nbytes = 0
            if not nbytes:
                self._close(feed)
                return
            try:
                writer.write(memoryview(buffer)[:nbytes])
            except OSError as exc:
                self._fail(feed, exc)
                self._close(feed)
                return
            if not drain:
                return

    def _fail(self, feed: Feed, exc: OSError) -> None:
        feed.error = exc
        if feed.on_error is not None:
            with contextlib.suppress(trio.RunFinishedError):
                feed.token.run_sync_soon(feed.on_error.cancel)

    def _close(self, feed: Feed) -> None:
        """Let go of the pipe and close the writer; the trio side hears of it
        after every byte count the writer sent (callbacks run in order)."""
        with self._lock:
            feed.closed = True
            registered = self._feeds.pop(feed.rfd, None) is not None
        if registered:
            self._epoll.unregister(feed.rfd)
        writer, feed.writer = feed.writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:  # what a masked output held back did not fit
                if feed.error is None:
                    self._fail(feed, exc)
        with contextlib.suppress(trio.RunFinishedError):
            feed.token.run_sync_soon(feed.done.set)


_pump: OutputPump | None = None
_pump_lock = threading.Lock()


def output_pump() -> OutputPump:
    """The process's pump (made on first use)."""
    global _pump
    with _pump_lock:
        if _pump is None:
            _pump = OutputPump()
        return _pump
