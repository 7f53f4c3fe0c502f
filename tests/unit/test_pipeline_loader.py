"""Tests for loading and validating conveyor.yaml files."""

from __future__ import annotations

import pickle
import textwrap
from collections.abc import Iterable

import pytest

from conveyor.daemon.pipeline import (
    ConcurrencySpec,
    Diagnostic,
    Limits,
    PipelineError,
    PipelineSpec,
    PipelineTooLarge,
    RetryPolicy,
    StageSpec,
    check_pipeline,
    load_pipeline,
)
from conveyor.daemon.pipeline.graph import order_stages


def yml(text: str) -> str:
    """Dedent a YAML snippet; line 1 is the first line after the opening quotes."""
    return textwrap.dedent(text).lstrip("\n")


def diagnose(text: str, **kwargs: object) -> list[Diagnostic]:
    spec, diagnostics = check_pipeline(yml(text), **kwargs)  # type: ignore[arg-type]
    assert diagnostics, "expected diagnostics"
    assert spec is None
    return diagnostics


def only(text: str, **kwargs: object) -> Diagnostic:
    diagnostics = diagnose(text, **kwargs)
    assert len(diagnostics) == 1, [str(d) for d in diagnostics]
    return diagnostics[0]


def run_kind(stage: StageSpec) -> Iterable[tuple[str, str]]:
    if not stage.run:
        yield "run", "a 'run' stage needs at least one command"


def docker_kind(stage: StageSpec) -> Iterable[tuple[str, str]]:
    if "image" not in stage.with_:
        yield "with.image", "required parameter 'image' is missing"
    elif not isinstance(stage.with_["image"], str):
        yield "with.image", "expected an image name"


KINDS = {"run": run_kind, "docker": docker_kind}

FULL = """
    # A pipeline with every field.
    name: demo.app_1
    env: {GREETING: hello, COUNT: 3, RATIO: 1.50, DEBUG: true, VERSION: 1.10}
    timeout: 1h30m
    executor: docker
    concurrency:
      group: "deploy-{ref}"
      cancel_in_progress: true
    stages:
      lint:
        run: ruff check .
      test:
        uses: run
        run:
          - pytest -q
          - coverage report
        needs: lint
        timeout: 5m
        retries: 2
        env: {PY: 3.11}
        executor: local
      build:
        uses: docker
        needs: [lint, test]
        retries: {max: 3, backoff: 500ms, factor: 3}
        with:
          image: python:3.11
          args: [--pull]
"""


# --------------------------------------------------------------------------- valid files


def test_full_file_round_trip() -> None:
    spec = load_pipeline(yml(FULL), stage_kinds=KINDS, executors={"local", "docker"})
    assert spec.name == "demo.app_1"
    assert spec.env == {
        "GREETING": "hello",
        "COUNT": "3",
        "RATIO": "1.50",  # env values keep their source text
        "DEBUG": "true",
        "VERSION": "1.10",
    }
    assert spec.timeout == 5400.0
    assert spec.executor == "docker"
    assert spec.concurrency == ConcurrencySpec(group="deploy-{ref}", cancel_in_progress=True)
    assert list(spec.stages) == ["lint", "test", "build"]

    lint = spec.stages["lint"]
    assert lint.uses == "run"
    assert lint.run == ["ruff check ."]
    assert lint.needs == []
    assert lint.timeout is None
    assert lint.retries == RetryPolicy(max=0, backoff=1.0, factor=2.0)
    assert lint.env == {}
    assert lint.executor is None
    assert lint.with_ == {}

    test = spec.stages["test"]
    assert test.run == ["pytest -q", "coverage report"]
    assert test.needs == ["lint"]
    assert test.timeout == 300.0
    assert test.retries.max == 2
    assert test.env == {"PY": "3.11"}
    assert test.executor == "local"

    build = spec.stages["build"]
    assert build.uses == "docker"
    assert build.needs == ["lint", "test"]
    assert build.retries == RetryPolicy(max=3, backoff=0.5, factor=3.0)
    assert build.with_ == {"image": "python:3.11", "args": ["--pull"]}

    dumped = spec.model_dump(by_alias=True)
    assert dumped["stages"]["build"]["with"] == {"image": "python:3.11", "args": ["--pull"]}
    assert PipelineSpec.model_validate(dumped) == spec


def test_minimal_file_defaults() -> None:
    spec = load_pipeline("name: x\nstages:\n  only: {run: make}\n")
    assert spec.env == {}
    assert spec.timeout is None
    assert spec.executor == "local"
    assert spec.concurrency is None
    assert spec.stage_order() == ["only"]


def test_concurrency_defaults() -> None:
    spec = load_pipeline("name: x\nconcurrency: {}\nstages: {a: {}}\n")
    assert spec.concurrency == ConcurrencySpec(group=None, cancel_in_progress=False)


def test_env_values_from_python_are_normalised() -> None:
    spec = PipelineSpec.model_validate(
        {"name": "x", "env": {"A": 1, "B": 2.5, "C": False, "D": "d"}, "stages": {"a": {}}}
    )
    assert spec.env == {"A": "1", "B": "2.5", "C": "false", "D": "d"}


def test_with_can_be_passed_by_name_in_python() -> None:
    stage = StageSpec.model_validate({"with_": {"image": "alpine"}})
    assert stage.with_ == {"image": "alpine"}


def test_yaml_anchors_and_merge_keys() -> None:
    spec = load_pipeline(
        yml(
            """
            name: x
            stages:
              a: &base
                run: make
                timeout: 1m
              b:
                <<: *base
                run: make other
            """
        )
    )
    assert spec.stages["b"].run == ["make other"]
    assert spec.stages["b"].timeout == 60.0


# --------------------------------------------------------------------------- stage order


def test_stage_order_is_stable_with_respect_to_file_order() -> None:
    spec = load_pipeline(
        yml(
            """
            name: x
            stages:
              deploy: {needs: [build, docs]}
              docs: {}
              build: {needs: [test, lint]}
              test: {}
              lint: {}
              notify: {needs: deploy}
            """
        )
    )
    assert spec.stage_order() == ["docs", "test", "lint", "build", "deploy", "notify"]


def test_stage_order_keeps_file_order_without_needs() -> None:
    spec = load_pipeline("name: x\nstages: {c: {}, a: {}, b: {}}\n")
    assert spec.stage_order() == ["c", "a", "b"]


def test_stage_order_rejects_cycles_in_directly_built_specs() -> None:
    spec = PipelineSpec.model_validate(
        {"name": "x", "stages": {"a": {"needs": "b"}, "b": {"needs": "a"}}}
    )
    with pytest.raises(ValueError, match="cycle"):
        spec.stage_order()


# --------------------------------------------------------------------------- retries


def test_retries_as_int() -> None:
    spec = load_pipeline("name: x\nstages:\n  a: {retries: 4}\n")
    assert spec.stages["a"].retries == RetryPolicy(max=4, backoff=1.0, factor=2.0)


def test_retries_as_mapping() -> None:
    spec = load_pipeline("name: x\nstages:\n  a:\n    retries: {max: 2, backoff: 2s}\n")
    policy = spec.stages["a"].retries
    assert policy == RetryPolicy(max=2, backoff=2.0, factor=2.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_retry_delay_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(0)


def test_retries_out_of_range() -> None:
    d = only(
        """
        name: x
        stages:
          a:
            retries: 11
        """
    )
    assert (d.line, d.column) == (4, 14)
    assert d.path == "stages.a.retries.max"
    assert d.message == "must be at most 10, got the integer 11"


def test_retries_unknown_key_and_bool() -> None:
    diagnostics = diagnose(
        """
        name: x
        stages:
          a:
            retries: {max: 1, delay: 5s}
          b:
            retries: true
        """
    )
    assert [(d.line, d.path) for d in diagnostics] == [
        (4, "stages.a.retries.delay"),
        (6, "stages.b.retries"),
    ]
    assert diagnostics[0].message == (
        "unknown field 'delay'; expected one of: max, backoff, factor"
    )
    assert "expected a number of retries or a mapping" in diagnostics[1].message
    assert "got true" in diagnostics[1].message


# --------------------------------------------------------------------------- YAML problems


def test_malformed_yaml_reports_line() -> None:
    d = only(
        """
        name: x
        stages:
          a:
            run: make
           b: {}
        """
    )
    assert (d.line, d.column) == (5, 4)
    assert d.path == ""
    assert d.message == (
        "invalid YAML: 'b' is indented more than the other stages (column 3): indent it to column 3"
    )


def test_unclosed_flow_sequence() -> None:
    d = only("name: x\nstages: {a: {needs: [b}}\n")
    assert (d.line, d.column) == (2, 23)
    assert d.message.startswith("invalid YAML: expected ',' or ']' here, inside the list")


def test_tab_indentation() -> None:
    d = only("name: x\n\tstages: {}\n")
    assert (d.line, d.column) == (2, 1)
    assert "a tab is used for indentation" in d.message


def test_duplicate_keys() -> None:
    diagnostics = diagnose(
        """
        name: x
        stages:
          a: {run: one}
          b: {}
          a: {run: two}
        name: y
        """
    )
    assert [(d.line, d.column, d.path, d.message) for d in diagnostics] == [
        (5, 3, "stages.a", "duplicate key 'a' (first defined on line 3)"),
        (6, 1, "name", "duplicate key 'name' (first defined on line 1)"),
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    spec, diagnostics = check_pipeline(text, "ci/conveyor.yaml")
    assert spec is None
    assert [str(d) for d in diagnostics] == [
        "ci/conveyor.yaml:1:1: file is empty; expected a mapping with 'name' and 'stages'"
    ]


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n- b\n", "a list"), ("hello\n", "the string 'hello'")]
)
def test_document_that_is_not_a_mapping(text: str, got: str) -> None:
    d = only(text)
    assert (d.line, d.column, d.path) == (1, 1, "")
    assert d.message == (f"expected a mapping with 'name' and 'stages' at the top level, got {got}")


def test_multiple_documents() -> None:
    d = only("name: a\nstages: {a: {}}\n---\nname: b\n")
    assert d.line == 3
    assert "a pipeline file holds one document" in d.message


def test_too_large_file() -> None:
    text = "name: x\nstages: {a: {}}\n" + "#" * (1024 * 1024) + "\n"
    d = only(text)
    assert "too large" in d.message
    assert "1 MiB" in d.message


def test_alias_bomb_is_rejected() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefg", "bcdefgh", strict=True):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]")
    d = only("\n".join(lines) + "\n")
    assert "too complex" in d.message


def test_unsupported_tag() -> None:
    d = only("name: !secret x\nstages: {a: {}}\n")
    assert (d.line, d.column, d.path) == (1, 7, "name")
    assert d.message == "unsupported YAML tag '!secret'"


# --------------------------------------------------------------------------- model errors


def test_unknown_key_with_line() -> None:
    d = only(
        """
        name: x
        stages:
          lint:
            run: ruff check .
          test:
            nedds: [lint]
        """
    )
    assert (d.line, d.column) == (6, 5)
    assert d.path == "stages.test.nedds"
    assert d.message == (
        "unknown field 'nedds'; expected one of: uses, run, needs, timeout, retries, env, "
        "executor, image, resources, placement, network, user, secrets, with, inputs,"
        " require_clean, allow_dirty, overwrite_tags; did you mean 'needs'?"
    )


def test_unknown_top_level_key() -> None:
    d = only("name: x\nstage: {}\nstages: {a: {}}\n")
    assert (d.line, d.column, d.path) == (2, 1, "stage")
    assert d.message.startswith(
        "unknown field 'stage'; expected one of: name, version, env, timeout, executor, image,"
        " resources, placement, network, user, concurrency, secrets, stages"
    )
    assert d.message.endswith("did you mean 'stages'?")


def test_with_underscore_is_not_accepted_in_files() -> None:
    d = only("name: x\nstages:\n  a:\n    with_: {}\n")
    assert (d.line, d.path) == (4, "stages.a.with_")
    assert "unknown field 'with_'" in d.message
    assert "did you mean 'with'?" in d.message


def test_wrong_type_with_line() -> None:
    d = only(
        """
        name: x
        stages:
          a:
            run:
              - make
              - {cmd: test}
        """
    )
    assert (d.line, d.column) == (6, 9)
    assert d.path == "stages.a.run[1]"
    assert d.message == "expected a string, got a mapping"


def test_stages_must_be_a_mapping() -> None:
    d = only("name: x\nstages: [a, b]\n")
    assert (d.line, d.column, d.path) == (2, 9, "stages")
    assert d.message == "expected a mapping of stage names to stages, got a list"


def test_stages_must_not_be_empty() -> None:
    d = only("name: x\nstages: {}\n")
    assert (d.line, d.path, d.message) == (2, "stages", "at least one stage is required")


def test_missing_required_field() -> None:
    d = only("# comment\nstages:\n  a: {}\n")
    assert (d.line, d.column, d.path) == (2, 1, "")
    assert d.message == "required field 'name' is missing"


def test_missing_both_required_fields() -> None:
    diagnostics = diagnose("env: {A: b}\n")
    assert [d.message for d in diagnostics] == [
        "required field 'name' is missing",
        "required field 'stages' is missing",
    ]


def test_invalid_names() -> None:
    diagnostics = diagnose(
        """
        name: -bad
        stages:
          ok: {}
          not ok: {}
        """
    )
    assert [(d.line, d.column, d.path) for d in diagnostics] == [
        (1, 7, "name"),
        (4, 3, "stages.not ok"),
    ]
    assert diagnostics[0].message.startswith("invalid pipeline name '-bad': must start with")
    assert diagnostics[1].message.startswith("invalid stage name 'not ok': must start with")


def test_bad_duration() -> None:
    d = only(
        """
        name: x
        timeout: 10
        stages:
          a:
            timeout: 5x
        """
    )
    assert (d.line, d.column, d.path) == (5, 14, "stages.a.timeout")
    assert d.message == "invalid duration '5x': expected a number of seconds or e.g. 30s, 5m, 1h30m"


def test_zero_timeout_is_rejected() -> None:
    d = only("name: x\ntimeout: 0s\nstages: {a: {}}\n")
    assert (d.line, d.path) == (2, "timeout")
    assert d.message == "invalid duration '0s': must be greater than 0"


def test_bad_env_value() -> None:
    d = only("name: x\nstages:\n  a:\n    env:\n      A: [1, 2]\n")
    assert (d.line, d.column, d.path) == (5, 10, "stages.a.env.A")
    assert "expected a string, number or boolean" in d.message


def test_all_errors_are_collected() -> None:
    diagnostics = diagnose(
        """
        name: x
        timeout: forever
        concurrency: {group: 1, cancel: yes}
        stages:
          a:
            retries: {max: -1}
            executor: ""
        """
    )
    assert [(d.line, d.path) for d in diagnostics] == [
        (2, "timeout"),
        (3, "concurrency.group"),
        (3, "concurrency.cancel"),
        (6, "stages.a.retries.max"),
        (7, "stages.a.executor"),
    ]
    assert diagnostics[1].message == "expected a string, got the integer 1"
    assert diagnostics[3].message == "must be at least 0, got the integer -1"
    assert diagnostics[4].message == "must not be empty"


# --------------------------------------------------------------------------- semantic checks


def test_needs_missing_stage() -> None:
    d = only(
        """
        name: x
        stages:
          lint: {}
          test: {}
          build:
            needs: [lint, tset]
        """
    )
    assert (d.line, d.column) == (6, 19)
    assert d.path == "stages.build.needs[1]"
    assert d.message == "unknown stage 'tset'; expected one of: lint, test; did you mean 'test'?"


def test_needs_missing_stage_written_as_string() -> None:
    d = only("name: x\nstages:\n  a: {}\n  b:\n    needs: zzz\n")
    assert (d.line, d.column, d.path) == (5, 12, "stages.b.needs")
    assert d.message == "unknown stage 'zzz'; expected one of: a"


def test_self_need() -> None:
    d = only("name: x\nstages:\n  a: {}\n  b:\n    needs: [a, b]\n")
    assert (d.line, d.column, d.path) == (5, 16, "stages.b.needs[1]")
    assert d.message == "stage 'b' cannot need itself"


def test_duplicate_needs() -> None:
    d = only("name: x\nstages:\n  a: {}\n  b:\n    needs: [a, a]\n")
    assert (d.line, d.path) == (5, "stages.b.needs[1]")
    assert d.message == "duplicate entry 'a' in needs"


def test_cycle_of_three() -> None:
    d = only(
        """
        name: x
        stages:
          setup: {}
          a:
            needs: [setup, c]
          b:
            needs: [a]
          c:
            needs: [b]
          after:
            needs: [c]
        """
    )
    assert d.message == "dependency cycle: a -> c -> b -> a"
    assert (d.line, d.column) == (5, 20)
    assert d.path == "stages.a.needs[1]"


def test_cycle_reported_once_at_first_stage_in_file_order() -> None:
    diagnostics = diagnose(
        """
        name: x
        stages:
          c:
            needs: [b]
          a:
            needs: [c]
          b:
            needs: [a]
          d: {needs: e}
          e: {needs: d}
        """
    )
    assert [(d.line, d.path, d.message) for d in diagnostics] == [
        (4, "stages.c.needs[0]", "dependency cycle: c -> b -> a -> c"),
        (9, "stages.d.needs", "dependency cycle: d -> e -> d"),
    ]


def test_unknown_stage_kind() -> None:
    d = only(
        """
        name: x
        stages:
          lint:
            uses: lnt
            run: ruff check .
        """,
        stage_kinds={"run": run_kind},
    )
    assert (d.line, d.column, d.path) == (4, 11, "stages.lint.uses")
    assert d.message == "unknown stage kind 'lnt'; installed kinds: run"


def test_unknown_stage_kind_did_you_mean() -> None:
    d = only("name: x\nstages:\n  a: {uses: dokcer}\n", stage_kinds=KINDS)
    assert (d.line, d.column, d.path) == (3, 13, "stages.a.uses")
    assert d.message == (
        "unknown stage kind 'dokcer'; installed kinds: docker, run; did you mean 'docker'?"
    )


def test_default_kind_must_be_installed() -> None:
    d = only("name: x\nstages:\n  a:\n    run: make\n", stage_kinds={"docker": docker_kind})
    assert (d.line, d.column, d.path) == (3, 3, "stages.a.uses")
    assert d.message == "unknown stage kind 'run'; installed kinds: docker"


def test_kind_validator_errors_are_reported_at_the_field() -> None:
    diagnostics = diagnose(
        """
        name: x
        stages:
          lint:
            run: []
          build:
            uses: docker
            with:
              image: [python]
          push:
            uses: docker
            with: {tag: latest}
        """,
        stage_kinds=KINDS,
    )
    assert [str(d) for d in diagnostics] == [
        "conveyor.yaml:4:10: stages.lint.run: a 'run' stage needs at least one command",
        "conveyor.yaml:8:14: stages.build.with.image: expected an image name",
        "conveyor.yaml:11:5: stages.push.with.image: required parameter 'image' is missing",
    ]


def test_kind_validator_falls_back_to_the_stage_line() -> None:
    d = only("name: x\nstages:\n  a: {uses: run}\n", stage_kinds=KINDS)
    assert (d.line, d.column, d.path) == (3, 3, "stages.a.run")


def test_crashing_kind_validator_is_reported() -> None:
    def broken(stage: StageSpec) -> Iterable[tuple[str, str]]:
        raise RuntimeError("boom")

    d = only("name: x\nstages:\n  a: {}\n", stage_kinds={"run": broken})
    assert (d.line, d.path) == (3, "stages.a")
    assert "boom" in d.message


def test_unknown_executor() -> None:
    diagnostics = diagnose(
        """
        name: x
        executor: dockr
        stages:
          a: {}
          b: {executor: local}
        """,
        executors={"local", "docker"},
    )
    assert [(d.line, d.path, d.message) for d in diagnostics] == [
        (
            2,
            "executor",
            "unknown executor 'dockr'; available executors: docker, local; did you mean 'docker'?",
        ),
    ]


def test_unknown_stage_executor() -> None:
    d = only("name: x\nstages:\n  a:\n    executor: lcl\n", executors={"local"})
    assert (d.line, d.column, d.path) == (4, 15, "stages.a.executor")
    assert d.message.startswith("unknown executor 'lcl'; available executors: local")


def test_diagnostics_sorted_by_line() -> None:
    diagnostics = diagnose(
        """
        name: x
        stages:
          a: {needs: [zz], uses: nope}
          b:
            needs: [a, a]
            run: make
        """,
        stage_kinds=KINDS,
    )
    assert [d.line for d in diagnostics] == sorted(d.line for d in diagnostics)
    assert len(diagnostics) == 3


# --------------------------------------------------------------------------- formatting


def test_diagnostic_str_format() -> None:
    d = Diagnostic(
        "conveyor.yaml",
        12,
        5,
        "stages.build.needs[0]",
        "unknown stage 'tset'; expected one of: lint",
    )
    assert str(d) == (
        "conveyor.yaml:12:5: stages.build.needs[0]: unknown stage 'tset'; expected one of: lint"
    )
    assert str(Diagnostic("f.yaml", 3, 0, "", "oops")) == "f.yaml:3: oops"
    assert str(Diagnostic("f.yaml", 0, 0, "name", "oops")) == "f.yaml: name: oops"


def test_diagnostics_use_the_given_file_name() -> None:
    d = only("name: x\nstages:\n  build:\n    needs: [tset]\n  test: {}\n", file="ci/p.yaml")
    assert str(d) == (
        "ci/p.yaml:4:13: stages.build.needs[0]: unknown stage 'tset'; expected one of: test; "
        "did you mean 'test'?"
    )


def test_load_pipeline_raises_with_all_diagnostics() -> None:
    text = "name: x\nstages:\n  a: {needs: [b]}\n  c: {timeout: -1}\n"
    with pytest.raises(PipelineError) as info:
        load_pipeline(text, "p.yaml")
    err = info.value
    assert [d.line for d in err.diagnostics] == [4]
    assert str(err) == "\n".join(str(d) for d in err.diagnostics)
    assert str(err).startswith("p.yaml:4:")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.diagnostics == err.diagnostics


def test_check_pipeline_returns_spec_when_valid() -> None:
    spec, diagnostics = check_pipeline("name: x\nstages: {a: {}}\n")
    assert diagnostics == []
    assert spec is not None
    assert spec.name == "x"


# --------------------------------------------------------------------------- order and cycles


def test_one_sort_orders_by_file_among_ready_stages_and_names_every_cycle() -> None:
    ordering = order_stages(
        {
            "late": ["early"],
            "x": ["y"],
            "early": [],
            "y": ["z"],
            "z": ["x"],
            "blocked": ["z"],
            "self": ["self"],
            "free": [],
        }
    )
    assert ordering.order == ["early", "late", "free"]
    assert ordering.cycles == [["x", "y", "z"], ["self"]]


def test_a_long_chain_is_ordered_and_a_long_cycle_found_without_recursion() -> None:
    n = 50_000
    chain = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)}
    assert order_stages(chain).order == list(chain)
    ring = {f"s{i}": [f"s{(i - 1) % n}"] for i in range(n)}
    ordering = order_stages(ring)
    assert ordering.order == []
    assert len(ordering.cycles) == 1 and len(ordering.cycles[0]) == n
    assert ordering.cycles[0][:3] == ["s0", f"s{n - 1}", f"s{n - 2}"]


def test_stage_order_names_the_cycle() -> None:
    spec = PipelineSpec.model_validate(
        {"name": "x", "stages": {"a": {}, "b": {"needs": "c"}, "c": {"needs": "b"}}}
    )
    with pytest.raises(ValueError, match="dependency cycle among stages: b -> c -> b"):
        spec.stage_order()


# --------------------------------------------------------------------------- limits


def chain_file(stages: int, needs: int = 1) -> str:
    lines = ["name: big", "stages:"]
    for i in range(stages):
        lines += [f"  s{i}:", "    run: 'true'"]
        if i:
            previous = ", ".join(f"s{j}" for j in range(max(0, i - needs), i))
            lines.append(f"    needs: [{previous}]")
    return "\n".join(lines) + "\n"


def test_too_many_stages_is_refused_naming_the_limit_and_its_setting() -> None:
    with pytest.raises(PipelineTooLarge) as info:
        check_pipeline(chain_file(30), limits=Limits(max_stages=20))
    (d,) = info.value.diagnostics
    assert (d.line, d.column, d.path) == (2, 1, "stages")
    assert d.message == "the pipeline has 30 stages; the limit is 20 (setting max_stages)"
    assert isinstance(info.value, PipelineError), "load_pipeline callers see a PipelineError"


def test_too_many_needs_is_refused_at_the_stage() -> None:
    with pytest.raises(PipelineTooLarge) as info:
        check_pipeline(chain_file(12, needs=11), limits=Limits(max_needs=10))
    (d,) = info.value.diagnostics
    assert d.path == "stages.s11.needs"
    assert d.message == "stage 's11' needs 11 stages; the limit is 10 (setting max_needs)"


def test_a_file_at_the_limits_is_valid_and_ordered() -> None:
    spec, diagnostics = check_pipeline(chain_file(1000))
    assert diagnostics == []
    assert spec is not None
    assert spec.stage_order() == [f"s{i}" for i in range(1000)]


def test_diagnostics_beyond_the_limit_are_counted() -> None:
    text = "name: x\nstages:\n" + "".join(f"  s{i}: {{needs: [nope{i}]}}\n" for i in range(30))
    _, diagnostics = check_pipeline(text, limits=Limits(max_diagnostics=10))
    assert len(diagnostics) == 11
    assert [d.line for d in diagnostics[:10]] == list(range(3, 13))
    assert diagnostics[-1].message == (
        "20 more problem(s) not shown; at most 10 are reported (setting max_diagnostics)"
    )


def test_long_lists_of_candidates_are_cut_short() -> None:
    text = "name: x\nstages:\n" + "".join(f"  s{i}: {{}}\n" for i in range(30))
    text += "  last: {needs: [zzz]}\n"
    d = only(text)
    shown = ", ".join(f"s{i}" for i in range(20))
    assert d.message == f"unknown stage 'zzz'; expected one of: {shown} (and 10 more)"
