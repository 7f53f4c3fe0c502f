"""Secret masking: what it costs a stage's log throughput.

The same stage writes the same output twice per repetition: once in a run
that asks for no secret (no masking: the log path is the plain one) and
once with ``secrets: [BENCH_TOKEN]`` (every chunk goes through the stream
masker, 16 forms of the value). Two outputs: log-like text lines, and a
stream of ``x`` (the worst case found: Python's ``bytes.find`` is slowest
on a run of one byte that the value also holds). Reports the stage's rate
into its log (daemon records, median of the repetitions) for each, masked
against unmasked, and the masker alone in-process on the same data.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from random import SystemRandom
from typing import Any

from bench.common import (
    MB,
    BenchResult,
    Figure,
    get_run,
    pipeline_repo,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
)
from conveyor.daemon.secrets.masking import Masker
from tests.support.daemon import DaemonProcess

NAME = "secrets"
STAGE = "out"
#: A token shaped like the ones CI systems hold (prefix and base62).
TOKEN = "ghp_" + "".join(
    SystemRandom().choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
    for _ in range(36)
)
LINE = "INFO 2024-05-01T12:00:00Z worker[4127]: processed item 48213 in 12.4 ms, status=ok"
OUTPUTS = {
    "text lines": f"yes '{LINE}' | head -c {{size}}",
    "x stream": "head -c {size} /dev/zero | tr '\\0' x",
}


def _stage_mb_s(daemon: DaemonProcess, repo: Path, size: int) -> float:
    run_id = submit(daemon, repo).id
    wait_finished(daemon, run_id)
    stage = get_run(daemon, run_id).stages[0]
    assert stage.status == 3, f"stage {STAGE} ended {stage.status}: {stage.reason}"  # SUCCEEDED
    return size / MB / (seconds(stage.finished_at) - seconds(stage.started_at))


def _masker_mb_s(data: bytes, rounds: int) -> float:
    stream = Masker({"BENCH_TOKEN": TOKEN}).stream()
    chunk = 1 << 20
    started = time.perf_counter()
    for _ in range(rounds):
        for at in range(0, len(data), chunk):
            stream.feed(data[at : at + chunk])
    stream.flush()
    return rounds * len(data) / MB / (time.perf_counter() - started)


def run(quick: bool) -> BenchResult:
    size = (20 if quick else 100) * MB
    reps = 2 if quick else 3
    rates: dict[str, dict[str, list[float]]] = {}
    with scratch_dir() as root:
        repos: dict[tuple[str, bool], Path] = {}
        for index, (output, command) in enumerate(OUTPUTS.items()):
            for masked in (False, True):
                stage: dict[str, Any] = {"run": command.format(size=size)}
                if masked:
                    stage["secrets"] = ["BENCH_TOKEN"]
                path = root / f"repo-{index}-{int(masked)}"
                repos[output, masked] = pipeline_repo(path, f"secrets-{index}", {STAGE: stage})
        daemon = DaemonProcess(
            root / "home",
            args=["--secrets-from-env", "BENCH_TOKEN"],
            env={"BENCH_TOKEN": TOKEN},
        ).start()
        try:
            for _ in range(reps):
                for output in OUTPUTS:
                    for masked in (False, True):
                        key = "masked" if masked else "plain"
                        rate = _stage_mb_s(daemon, repos[output, masked], size)
                        rates.setdefault(output, {}).setdefault(key, []).append(rate)
        finally:
            daemon.stop()
    text = (LINE + "\n").encode() * (8 * MB // (len(LINE) + 1))
    alone = {
        "text lines": _masker_mb_s(text, 2 if quick else 5),
        "x stream": _masker_mb_s(b"x" * 8 * MB, 1 if quick else 2),
    }
    figures: list[Figure] = []
    summary: dict[str, Any] = {}
    for output, by_kind in rates.items():
        unmasked = statistics.median(by_kind["plain"])
        with_secret = statistics.median(by_kind["masked"])
        figures += [
            Figure(
                f"{output}: stage output into the log, with a secret (masked)",
                with_secret,
                "MB/s",
                baseline=unmasked,
                baseline_name="same stage, no secret",
            ),
            Figure(f"{output}: stage output into the log, no secret", unmasked, "MB/s"),
            Figure(f"{output}: the stream masker alone, 1 MiB chunks", alone[output], "MB/s"),
        ]
        summary[output] = {
            "plain_mb_s": by_kind["plain"],
            "masked_mb_s": by_kind["masked"],
            "masked_vs_plain": with_secret / unmasked,
            "masker_alone_mb_s": alone[output],
        }
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "bytes": size,
            "repetitions": reps,
            "outputs": OUTPUTS,
            "token_length": len(TOKEN),
        },
        summary=summary,
    )
