"""``python -m bench.pairs BASE NEW``: two versions of the daemon compared
side by side, the way this machine's noise allows.

Benchmarks run one after the other move with the machine's load more than
with most changes (on the 2-core VM these figures come from, the Python
baselines themselves move by half in minutes). Here two daemons run at
once, one on the code of the source tree ``BASE``, one on ``NEW`` (each a
checkout of this repository: ``git worktree add /tmp/base main``), with
the same pipelines; their runs alternate (one then the other, then the
other way round), and each figure is the median over the pairs, so drift
hits both sides alike. Run it twice with the trees swapped: the side that
comes second shares the disk's state with the first, and the difference
between the two orders is the measure's own error.

Workloads:

- ``chain``: the 50-stage chain of ``true`` of :mod:`bench.overhead`,
  followed with ``WatchRun``: wall time and daemon CPU per stage, the
  checkout, a stage's median, the gap between stages, the submit call;
- ``single``: a one-stage run whose process writes its clock: submit →
  process started, the fixed cost per run (created → finished minus its
  stage) and its steps, from the daemon's records.

Prints a table and writes ``bench/results/pairs-<workload>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    get_run,
    machine_info,
    pipeline_repo,
    scratch_dir,
    seconds,
    submit,
    table,
    wait_finished,
    write_json,
)
from bench.overhead import STAGES, _one_run, chain
from tests.support.daemon import DaemonProcess

#: Figures of the chain given per stage (the others per run).
PER_STAGE = ("wall", "daemon_cpu", "daemon_user_cpu", "daemon_system_cpu")
CHAIN_FIGURES = (
    *PER_STAGE,
    "checkout",
    "stage_median",
    "gap_median",
    "submit_rpc",
    "queue",
    "close_out",
)


def _pythonpath(tree: Path) -> str:
    """The daemon's, the clients' and the plugins' sources of ``tree``."""
    return ":".join(str(tree / part / "src") for part in ("daemon", "clients", "plugins"))


def _single(daemon: DaemonProcess, repo: Path, marks: Path) -> dict[str, float]:
    t0 = time.time()
    run_id = submit(daemon, repo).id
    wait_finished(daemon, run_id)
    run = get_run(daemon, run_id)
    stage = run.stages[0]
    process = int((marks / run_id).read_text()) / 1e9
    created, started = seconds(run.created_at), seconds(run.started_at)
    finished = seconds(run.finished_at)
    stage_start, stage_end = seconds(stage.started_at), seconds(stage.finished_at)
    return {
        "submit_to_process": process - t0,
        "fixed": (finished - created) - (stage_end - stage_start),
        "submit_to_stored": created - t0,
        "queue": started - created,
        "checkout": stage_start - started,
        "spawn": process - stage_start,
        "close_out": finished - stage_end,
    }


def compare(base: Path, new: Path, workload: str, pairs: int) -> dict[str, Any]:
    """Run ``pairs`` pairs of ``workload``; medians per side and figure."""
    samples: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
    with scratch_dir() as root:
        marks = root / "marks"
        marks.mkdir()
        one: Callable[[DaemonProcess], dict[str, float]]
        if workload == "chain":
            repo = pipeline_repo(root / "repo", "chain", chain(STAGES))

            def one(daemon: DaemonProcess) -> dict[str, float]:
                return _one_run(daemon, repo, watch=True)
        else:
            clock = f'date +%s%N > {marks}/"$CONVEYOR_RUN_ID"'
            repo = pipeline_repo(root / "repo", "one", {"t": {"run": clock}})

            def one(daemon: DaemonProcess) -> dict[str, float]:
                return _single(daemon, repo, marks)

        daemons = {
            side: DaemonProcess(root / side, env={"PYTHONPATH": _pythonpath(tree)}).start()
            for side, tree in (("base", base), ("new", new))
        }
        try:
            for daemon in daemons.values():  # warm-up: imports, caches, pages
                for _ in range(3):
                    one(daemon)
            for index in range(pairs):
                order = ["base", "new"] if index % 2 == 0 else ["new", "base"]
                for side in order:
                    samples[side].append(one(daemons[side]))
        finally:
            for daemon in daemons.values():
                daemon.stop()
    figures = CHAIN_FIGURES if workload == "chain" else tuple(samples["base"][0])
    medians: dict[str, dict[str, float]] = {}
    for figure in figures:
        scale = 1000 / (STAGES if workload == "chain" and figure in PER_STAGE else 1)
        medians[figure] = {
            side: statistics.median(sample[figure] for sample in samples[side]) * scale
            for side in samples
        }
    return {
        "workload": workload,
        "base": str(base),
        "new": str(new),
        "pairs": pairs,
        "medians_ms": medians,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n", 1)[0]
    parser = argparse.ArgumentParser(prog="python -m bench.pairs", description=summary)
    parser.add_argument("base", type=Path, help="source tree of the code to compare against")
    parser.add_argument("new", type=Path, help="source tree of the code to measure")
    parser.add_argument("--workload", choices=("chain", "single"), default="chain")
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args(argv)
    result = compare(args.base.resolve(), args.new.resolve(), args.workload, args.pairs)
    rows = [
        [
            figure + (" /stage" if args.workload == "chain" and figure in PER_STAGE else ""),
            f"{values['base']:.3f}",
            f"{values['new']:.3f}",
            f"{100 * (values['new'] - values['base']) / values['base']:+.0f}%",
        ]
        for figure, values in result["medians_ms"].items()
    ]
    print(f"{args.workload}: medians of {args.pairs} pairs, ms")
    print(table(["figure", "base", "new", "new vs base"], rows))
    path = write_json(RESULTS_DIR / f"pairs-{args.workload}.json", result)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
