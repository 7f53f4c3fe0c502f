"""``python -m bench [NAME ...] [--quick]``: run benchmarks, print tables, write results.

Every benchmark writes ``bench/results/<name>.json``; this runner also prints a
summary table of the figures that have a target or a baseline and writes
``bench/results/summary.json``. Missed targets are reported, not failures:
the exit code is non-zero only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    artifacts,
    auth,
    checkout,
    concurrent,
    dashboard,
    delivery,
    deploy_targets,
    docker_build,
    executors,
    floor,
    followers,
    latency,
    logstream,
    overhead,
    secrets,
    tracing,
    validation,
)
from bench.common import (
    RESULTS_DIR,
    BenchResult,
    fmt,
    machine_info,
    met_text,
    report,
    table,
    write_json,
)

BENCHMARKS: dict[str, Callable[[bool], BenchResult]] = {
    overhead.NAME: overhead.run,
    latency.NAME: latency.run,
    checkout.NAME: checkout.run,
    concurrent.NAME: concurrent.run,
    logstream.NAME: logstream.run,
    followers.NAME: followers.run,
    floor.NAME: floor.run,
    tracing.NAME: tracing.run,
    validation.NAME: validation.run,
    artifacts.NAME: artifacts.run,
    docker_build.NAME: docker_build.run,
    secrets.NAME: secrets.run,
    auth.NAME: auth.run,
    delivery.NAME: delivery.run,
    deploy_targets.NAME: deploy_targets.run,
    executors.NAME: executors.run,
    dashboard.NAME: dashboard.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for CI")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        _parser().error(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}"
        )
    names: list[str] = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    results: list[BenchResult] = []
    errors: dict[str, str] = {}
    for name in names:
        print(f"running {name}{' (quick)' if args.quick else ''} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name](args.quick)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        result.seconds = time.perf_counter() - t0
        report(result, quick=args.quick)
        results.append(result)
    total = time.perf_counter() - started

    rows: list[list[str]] = []
    for result in results:
        for f in result.figures:
            if not f.in_summary:
                continue
            rows.append(
                [
                    f"{result.name}: {f.name}",
                    f"{fmt(f.value)} {f.unit}",
                    f.target_text(),
                    met_text(f.met),
                    f"{f.ratio:.2f}x {f.baseline_name}" if f.ratio is not None else "",
                ]
            )
    print(f"\n== summary ({total:.0f} s{', quick' if args.quick else ''}) ==")
    print(table(["figure", "value", "target", "met?", "vs baseline"], rows))
    for name, error in errors.items():
        print(f"{name}: FAILED TO RUN: {error}")
    targets = [f.met for r in results for f in r.figures if f.met is not None]
    print(f"targets met: {sum(targets)}/{len(targets)}")
    path = write_json(
        RESULTS_DIR / "summary.json",
        {
            "quick": args.quick,
            "machine": machine_info(),
            "benchmarks": names,
            "total_seconds": round(total, 1),
            "targets_met": sum(targets),
            "targets": len(targets),
            "errors": errors,
            "results": {
                r.name: {
                    "seconds": round(r.seconds, 1),
                    "figures": [f.as_dict() for f in r.figures],
                }
                for r in results
            },
        },
    )
    print(f"-> {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
