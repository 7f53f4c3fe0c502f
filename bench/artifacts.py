"""Artifacts: a cache-hit re-run of a build stage, and signing and checking
provenance.

* **Cache hit.** A ``file`` stage with ``inputs:`` builds a tarball of the
  repository's sources once; every later run of the same commit reuses it.
  The figure is the cache-hit stage's time from its start to its end, as
  the daemon recorded them (target: at most 100 ms), against the same stage
  building (its first run) and a ``run: "true"`` stage of the same runs (a
  stage that starts one process: the floor of a stage that does work).
* **Provenance.** Per artifact, in-process: building the in-toto statement
  and signing it into a DSSE envelope, and checking an envelope as
  ``conveyor artifacts verify`` does; against a bare Ed25519 signature and
  check of the same bytes.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    BenchResult,
    Figure,
    describe,
    get_run,
    ms,
    running_daemon,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
)
from conveyor.client.provenance import PAYLOAD_TYPE, load_public_key, pae, verify_envelope
from conveyor.daemon.artifacts import provenance, signing
from tests.support.repos import make_repo

NAME = "artifacts"
#: Cache-hit stage time (start to end) at most this, in ms.
TARGET_CACHE_HIT_MS = 100.0
SOURCE_FILES = 200


def _pipeline() -> str:
    return yaml.safe_dump(
        {
            "name": "bench-artifacts",
            "version": "1.0.0",
            "stages": {
                "noop": {"run": "true"},
                "package": {
                    "uses": "file",
                    "inputs": ["src", "conveyor.yaml"],
                    "run": ["mkdir -p dist", "tar -czf dist/app.tar.gz src"],
                    "with": {"path": "dist/app.tar.gz"},
                },
            },
        },
        sort_keys=False,
    )


def _stage_ms(run: Any, name: str) -> float:
    for stage in run.stages:
        if stage.name == name:
            return (seconds(stage.finished_at) - seconds(stage.started_at)) * 1000
    raise KeyError(name)


def _cache_hits(root: Path, reruns: int) -> dict[str, Any]:
    files = {f"src/app/module_{i}.py": f"VALUE = {i}\n" * 40 for i in range(SOURCE_FILES)}
    repo = make_repo(root / "repo", {"conveyor.yaml": _pipeline(), **files}).path
    with running_daemon(root / "home") as daemon:
        runs = []
        for _ in range(reruns + 1):
            run_id = submit(daemon, repo).id
            wait_finished(daemon, run_id)
            runs.append(get_run(daemon, run_id))
    first, hits = runs[0], runs[1:]
    for run in hits:
        reason = next(s.reason for s in run.stages if s.name == "package")
        if not reason.startswith("cache hit:"):
            raise RuntimeError(f"run #{run.number} was not a cache hit: {reason!r}")
    return {
        "build_ms": _stage_ms(first, "package"),
        "hit_ms": [_stage_ms(run, "package") for run in hits],
        "noop_ms": [_stage_ms(run, "noop") for run in runs],
    }


def _facts(i: int) -> provenance.BuildFacts:
    return provenance.BuildFacts(
        subject_name="127.0.0.1:5000/demo/app",
        digest=f"sha256:{i:064x}",
        repository="/srv/git/app.git",
        ref="refs/heads/main",
        commit="c" * 40,
        pipeline="app",
        run_id="01a233070038f6535553",
        run_number=i,
        stage="build",
        stage_kind="build",
        parameters={"with": {"context": ".", "dockerfile": "Dockerfile"}, "inputs": ["src"]},
        started_at=1_700_000_000.0,
        finished_at=1_700_000_012.5,
        builder_id="conveyor://ci-1/home/ci/.conveyor",
        builder_version="0.1.0",
        version=f"1.4.0-rc.{i}+sha.cccccccccccc",
        trace_id="ab" * 16,
    )


def _signing(root: Path, count: int) -> dict[str, list[float]]:
    key = signing.load_or_create(root)
    public = load_public_key(key.public_pem())
    sign_s: list[float] = []
    verify_s: list[float] = []
    raw_sign_s: list[float] = []
    raw_verify_s: list[float] = []
    for i in range(count):
        facts = _facts(i)
        started = time.perf_counter()
        envelope = key.sign_statement(provenance.statement(facts))
        sign_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        verify_envelope(envelope, public, subject_digest=facts.digest)
        verify_s.append(time.perf_counter() - started)
        message = pae(PAYLOAD_TYPE, envelope.encode())
        started = time.perf_counter()
        signature = key.private.sign(message)
        raw_sign_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        public.verify(signature, message)
        raw_verify_s.append(time.perf_counter() - started)
    return {"sign": sign_s, "verify": verify_s, "raw_sign": raw_sign_s, "raw_verify": raw_verify_s}


def run(quick: bool) -> BenchResult:
    reruns = 5 if quick else 20
    count = 300 if quick else 3000
    with scratch_dir() as root:
        cache = _cache_hits(root, reruns)
        timings = _signing(root, count)
    hit = statistics.median(cache["hit_ms"])
    noop = statistics.median(cache["noop_ms"])
    us = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
    figures = [
        Figure(
            "cache-hit re-run of a build stage, stage start to end (median)",
            hit,
            "ms",
            TARGET_CACHE_HIT_MS,
            baseline=cache["build_ms"],
            baseline_name="the same stage building",
            note=f"{reruns} re-runs",
        ),
        Figure("  cache hit, slowest", max(cache["hit_ms"]), "ms", TARGET_CACHE_HIT_MS),
        Figure(
            '  a run: "true" stage of the same runs (median)',
            noop,
            "ms",
            note="a stage that starts one process",
        ),
        Figure(
            "provenance: statement + DSSE signature, per artifact",
            us["sign"],
            "us",
            baseline=us["raw_sign"],
            baseline_name="bare Ed25519 signature",
            note=f"{count} artifacts",
        ),
        Figure(
            "provenance: verify envelope + statement, per artifact",
            us["verify"],
            "us",
            baseline=us["raw_verify"],
            baseline_name="bare Ed25519 check",
        ),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={"reruns": reruns, "signatures": count, "source_files": SOURCE_FILES},
        samples={
            "build_ms": round(cache["build_ms"], 3),
            "cache_hit_ms": [round(v, 3) for v in cache["hit_ms"]],
            "noop_ms": [round(v, 3) for v in cache["noop_ms"]],
        },
        summary={
            "cache_hit_ms": describe(cache["hit_ms"]),
            "sign_us": describe(timings["sign"], 1e6),
            "verify_us": describe(timings["verify"], 1e6),
            "raw_sign_us": describe(timings["raw_sign"], 1e6),
            "raw_verify_us": describe(timings["raw_verify"], 1e6),
            "sign_ms_samples_head": ms(timings["sign"][:20]),
        },
    )
