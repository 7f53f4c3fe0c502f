"""The container fields of a pipeline file (``image``, ``resources``,
``placement``, ``network``, ``user``): their checks, with file and line,
and how a stage's own fields and the pipeline's defaults combine."""

from __future__ import annotations

import pytest

from conveyor.daemon.pipeline import check_pipeline
from conveyor.daemon.pipeline.model import parse_memory

EXECUTORS = {"local", "docker", "swarm"}
CONTAINERS = {
    "docker": {"image", "resources", "network", "user"},
    "swarm": {"image", "resources", "placement", "network", "user"},
}


def problems(text: str) -> list[tuple[int, str, str]]:
    spec, diagnostics = check_pipeline(
        text, "ci/conveyor.yaml", executors=EXECUTORS, container_executors=CONTAINERS
    )
    assert all(d.file == "ci/conveyor.yaml" for d in diagnostics)
    assert (spec is None) == bool(diagnostics)
    return [(d.line, d.path, d.message) for d in diagnostics]


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        (64 << 20, 64 << 20),
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("64MiB", 64 << 20),
        ("1.5g", 3 << 29),
        ("2 GB", 2 << 30),
        ("6291456", 6 << 20),
        ("8192k", 8 << 20),
    ],
)
def test_memory_sizes_are_read_as_docker_reads_them(text: object, nbytes: int) -> None:
    assert parse_memory(text) == nbytes


def test_a_bad_memory_size_is_reported_at_its_line() -> None:
    found = problems(
        "name: p\nstages:\n  a:\n    executor: docker\n    image: busybox\n"
        "    resources:\n      memory: 64x\n  b:\n    executor: docker\n    image: busybox\n"
        "    resources: {memory: 1m}\n"
    )
    assert found == [
        (
            7,
            "stages.a.resources.memory",
            "invalid memory size '64x': expected a number of bytes or a size like 512m or 2g"
            " (k, m, g, t: KiB, MiB, GiB, TiB)",
        ),
        (
            11,
            "stages.b.resources.memory",
            "memory size '1m' is too small: Docker's smallest limit is 6m",
        ),
    ]


def test_a_stage_on_a_container_executor_needs_an_image() -> None:
    assert problems("name: p\nstages:\n  a:\n    executor: swarm\n    run: make\n") == [
        (
            3,
            "stages.a",
            "stage 'a' runs on the swarm executor, which needs an image: add image: (to the"
            " stage, or to the pipeline for all its stages)",
        )
    ]
    assert problems("name: p\nexecutor: docker\nimage: tools:1\nstages:\n  a: {run: make}\n") == []


def test_an_unknown_executor_is_reported_once() -> None:
    found = problems("name: p\nstages:\n  a:\n    executor: dokcer\n    image: x\n")
    assert [(line, path) for line, path, _ in found] == [(4, "stages.a.executor")]
    assert "unknown executor 'dokcer'" in found[0][2] and "did you mean 'docker'?" in found[0][2]


def test_container_fields_on_a_stage_that_runs_no_container_are_refused() -> None:
    found = problems("name: p\nstages:\n  a:\n    run: make\n    image: tools:1\n")
    assert found == [
        (
            5,
            "stages.a.image",
            "'image' is for stages that run in a container, and stage 'a' runs on the local"
            " executor; set executor: to a container executor (docker, swarm)",
        )
    ]


def test_a_field_the_executor_does_not_take_is_refused() -> None:
    found = problems(
        "name: p\nimage: t\nstages:\n  a:\n    executor: docker\n"
        "    placement: [node.role == manager]\n"
    )
    assert found == [(6, "stages.a.placement", "the docker executor does not take 'placement'")]


def test_network_user_and_placement_say_what_they_expect() -> None:
    found = problems(
        "name: p\nexecutor: swarm\nimage: t\nstages:\n"
        "  a: {network: bridge}\n  b: {user: bob}\n  c: {placement: node.role}\n"
        "  d: {resources: {cpus: 0}}\n"
    )
    assert found == [
        (
            5,
            "stages.a.network",
            "expected 'none' (loopback only) or 'host', got the string 'bridge'",
        ),
        (
            6,
            "stages.b.user",
            "expected a numeric uid or uid:gid (1000, '1000:1000'; 0 for root),"
            " got the string 'bob'",
        ),
        (
            7,
            "stages.c.placement[0]",
            "a placement constraint compares with == or != (node.labels.zone == eu), got"
            " 'node.role'",
        ),
        (8, "stages.d.resources.cpus", "must be greater than 0.0, got the integer 0"),
    ]


def test_a_stage_takes_the_pipeline_defaults_it_does_not_set() -> None:
    spec, diagnostics = check_pipeline(
        """
name: p
executor: swarm
image: tools:1
network: host
user: 1000
resources: {cpus: 2, memory: 1g}
placement: [node.labels.pool == ci]
stages:
  plain: {run: make}
  own:
    run: make
    image: other:2
    network: none
    user: "0:0"
    resources: {memory: 64m}
    placement: []
""",
        executors=EXECUTORS,
        container_executors=CONTAINERS,
    )
    assert diagnostics == [] and spec is not None
    plain = spec.container_settings("plain")
    assert (plain.image, plain.network, plain.user) == ("tools:1", "host", "1000")
    assert (plain.cpus, plain.memory, plain.placement) == (2, 1 << 30, ("node.labels.pool == ci",))
    own = spec.container_settings("own")
    assert (own.image, own.network, own.user) == ("other:2", "none", "0:0")
    assert (own.cpus, own.memory, own.placement) == (2, 64 << 20, ()), (
        "resources key by key; an empty placement list clears the pipeline's"
    )
