"""Empty git work trees made ahead of time, so a run's checkout does not
wait for the folders and files of its ``.git``.

A run's workspace starts as a small ``.git`` (see :func:`make_skeleton`):
five folders and four files that name nothing of the run. Making them is
file-system metadata work (an inode and a journal entry each), measured at
2.5 ms on the benchmark machine, a quarter of a run's fixed cost. The
daemon keeps a few of them in ``workspaces/.spare/``: a checkout renames
one into place (one rename) and writes what is the run's own into files
that already exist (HEAD, the borrowed object store, the tags); the run's
end, in the worker thread that removes its folders, makes a new one.

Blocking throughout: call from worker threads. Thread-safe.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from pathlib import Path

#: The folder under ``workspaces/`` that holds them (not a run id: start-up
#: leaves it to :meth:`SpareWorkspaces.reset`).
SPARE_FOLDER = ".spare"
#: Skeletons kept ready.
KEEP = 4
#: What a skeleton's ``packed-refs`` holds until a checkout writes the
#: repository's tags: git reads it as no packed refs.
EMPTY_PACKED_REFS = "# pack-refs with: peeled fully-peeled sorted \n"
_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"


def make_skeleton(workspace: Path) -> None:
    """Make ``workspace`` (which must not exist) an empty work tree whose
    ``.git`` has what git needs to see a repository, HEAD and the borrowed
    object store left empty for :func:`fill_skeleton`."""
    git_dir = workspace / ".git"
    # Only the folders git needs (refs/heads and refs/tags are made by git
    # when something goes there): each mkdir costs a journal write.
    (git_dir / "objects" / "info").mkdir(parents=True)
    (git_dir / "refs").mkdir()
    (git_dir / "HEAD").touch()
    (git_dir / "config").write_text(_CONFIG)
    (git_dir / "objects" / "info" / "alternates").touch()
    (git_dir / "packed-refs").write_text(EMPTY_PACKED_REFS)


def _overwrite(path: Path, text: str) -> None:
    """Replace what the existing file ``path`` holds (no new inode)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def fill_skeleton(workspace: Path, commit: str, objects: Path, packed_tags: str | None) -> None:
    """Make the skeleton at ``workspace`` the run's: HEAD detached at
    ``commit``, objects borrowed from ``objects`` (what ``git clone
    --shared`` does), and ``packed_tags`` as its packed refs, if any."""
    git_dir = workspace / ".git"
    _overwrite(git_dir / "HEAD", commit + "\n")
    _overwrite(git_dir / "objects" / "info" / "alternates", f"{objects}\n")
    if packed_tags is not None:
        _overwrite(git_dir / "packed-refs", packed_tags)


class SpareWorkspaces:
    """Skeletons kept ready in ``root`` (``workspaces/.spare``)."""

    def __init__(self, root: Path, keep: int = KEEP) -> None:
        self.root = root
        self.keep = keep
        self._lock = threading.Lock()
        self._ready: list[Path] = []
        self._making = 0
        self._names = itertools.count()

    def take(self, workspace: Path) -> bool:
        """Move a ready skeleton to ``workspace`` (which must not exist);
        False when none is ready (make it with :func:`make_skeleton`)."""
        while True:
            with self._lock:
                if not self._ready:
                    return False
                spare = self._ready.pop()
            try:
                os.rename(spare, workspace)
            except FileNotFoundError:  # removed behind our back: try another
                continue
            return True

    def reset(self) -> None:
        """Start afresh (at start-up): remove what an earlier daemon left
        in ``root``, then make :attr:`keep` skeletons."""
        with self._lock:
            self._ready.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        self.refill()

    def refill(self) -> None:
        """Make skeletons until :attr:`keep` are ready or being made. A
        skeleton that cannot be made (a full disk) is left out; checkouts
        then make their own."""
        while True:
            with self._lock:
                if len(self._ready) + self._making >= self.keep:
                    return
                self._making += 1
                path = self.root / str(next(self._names))
            made = False
            try:
                make_skeleton(path)  # makes the root too, with the daemon's umask
                made = True
            except OSError:
                shutil.rmtree(path, ignore_errors=True)
                return
            finally:
                with self._lock:
                    self._making -= 1
                    if made:
                        self._ready.append(path)

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self._ready)
