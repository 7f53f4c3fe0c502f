"""A run's checkout, written by the daemon against ``git read-tree``.

For trees of 1, 10, 50 and 100 files (the same source files, in ten
folders), each round checks the commit out three ways, in turn, through
:func:`conveyor.daemon.vcs.checkout` as a run does (no spare workspaces, so
each makes its ``.git``): by the daemon (:mod:`conveyor.daemon.native_checkout`)
with nothing kept, as for a commit none of whose objects it has seen; by the
daemon with the objects kept from the round before, as for a commit run
again; and by ``git read-tree``, the baseline. Each figure is the median time
of a checkout. ``MAX_ENTRIES`` is where the daemon stops writing trees
itself: beyond it git is as fast or faster.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import BenchResult, Figure, ms, scratch_dir
from conveyor.daemon import native_checkout, vcs
from tests.support.repos import git, make_repo

NAME = "checkout"
SIZES = (1, 10, 50, 100)
#: The daemon with nothing kept, the daemon with the objects kept, git.
WAYS = ("daemon", "daemon_kept", "git")


def _repo(path: Path, files: int) -> tuple[Path, str]:
    contents = {"conveyor.yaml": "name: checkout\nstages:\n  t:\n    run: 'true'\n"}
    for i in range(files - 1):
        contents[f"src/d{i % 10}/f{i}.py"] = f"print({i})\n" * 20
    repo = make_repo(path, contents)
    return repo.path, git("rev-parse", "HEAD", cwd=repo.path)


async def _rounds(root: Path, files: int, rounds: int) -> dict[str, list[float]]:
    repo, commit = _repo(root / f"repo-{files}", files)
    workspaces = root / f"ws-{files}"
    workspaces.mkdir()
    readers = vcs.CatFiles()
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for i in range(rounds):
            for way in WAYS[i % 3 :] + WAYS[: i % 3]:
                if way == "daemon":
                    readers.objects.clear()
                workspace = workspaces / f"{way}-{i}"
                t0 = time.perf_counter()
                await vcs.checkout(
                    repo, workspace, commit, readers=None if way == "git" else readers
                )
                times[way].append(time.perf_counter() - t0)
            if i % 10 == 9:
                await trio.to_thread.run_sync(shutil.rmtree, workspaces)
                workspaces.mkdir()
    finally:
        await readers.aclose()
    return times


def run(quick: bool) -> BenchResult:
    rounds = 30 if quick else 100
    figures: list[Figure] = []
    samples: dict[str, Any] = {"units": "ms"}
    summary: dict[str, Any] = {"max_entries": native_checkout.MAX_ENTRIES}
    with scratch_dir() as root:
        for files in SIZES:
            times = trio.run(_rounds, root, files, rounds)
            daemon, kept, by_git = (statistics.median(times[way]) * 1000 for way in WAYS)
            for name, value in (("nothing kept", daemon), ("objects kept", kept)):
                figures.append(
                    Figure(
                        f"checkout of {files} files by the daemon, {name}, median",
                        value,
                        "ms",
                        baseline=by_git,
                        baseline_name="git read-tree",
                    )
                )
            samples[f"{files}_files"] = {way: ms(values) for way, values in times.items()}
            summary[f"{files}_files"] = {
                "daemon_ms": daemon,
                "daemon_kept_ms": kept,
                "git_ms": by_git,
                "ratio": daemon / by_git,
                "ratio_kept": kept / by_git,
            }
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={"rounds": rounds, "sizes": list(SIZES)},
        samples=samples,
        summary=summary,
    )
