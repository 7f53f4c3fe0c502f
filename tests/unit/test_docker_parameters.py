"""What the ``build`` and ``push`` kinds accept in ``with:``, image names and
tags, and the build's cache inputs (no Docker engine needed)."""

from __future__ import annotations

import pytest

from conveyor.plugin import StageSpec
from conveyor.plugins.docker.build import BuildStage
from conveyor.plugins.docker.push import PushStage
from conveyor.plugins.docker.references import (
    check_repository,
    commit_tag,
    docker_tag,
    is_commit_tag,
    split_repository,
)


def problems(kind: BuildStage | PushStage, stage: dict[str, object]) -> list[tuple[str, str]]:
    return list(kind.validate(StageSpec.model_validate(stage)))


def test_a_build_needs_only_its_image() -> None:
    assert problems(BuildStage(), {"uses": "build", "with": {"image": "127.0.0.1:5000/a"}}) == []


@pytest.mark.parametrize(
    ("with_", "expected"),
    [
        ({}, ("with.image", "required parameter 'image' is missing")),
        (
            {"image": "127.0.0.1:5000/team/app:1.0"},
            (
                "with.image",
                "'127.0.0.1:5000/team/app:1.0': give the repository without a tag"
                " ('127.0.0.1:5000/team/app'); Conveyor tags the image with the run's version"
                " and the commit",
            ),
        ),
        (
            {"image": "127.0.0.1:5000/Team/App"},
            ("with.image", "'127.0.0.1:5000/Team/App' is not a repository name"),
        ),
        (
            {"image": "a/b", "context": "../elsewhere"},
            ("with.context", "'../elsewhere': must stay inside the repository (no '..')"),
        ),
        (
            {"image": "a/b", "dockerfile": "/etc/passwd"},
            ("with.dockerfile", "'/etc/passwd': must be relative to the repository root"),
        ),
        (
            {"image": "a/b", "build_args": {"VERSION": 1}},
            ("with.build_args.VERSION", "expected a string, got the integer 1"),
        ),
        (
            {"image": "a/b", "build_args": {"NOT A NAME": "x"}},
            ("with.build_args", "'NOT A NAME' is not a build argument name"),
        ),
        (
            {"image": "a/b", "labels": {"org.opencontainers.image.revision": "x"}},
            (
                "with.labels",
                "label 'org.opencontainers.image.revision' is set by Conveyor; leave it out",
            ),
        ),
        ({"image": "a/b", "target": "-x"}, ("with.target", "'-x' is not a build stage name")),
        ({"image": "a/b", "tags": ["x"]}, ("with.tags", "unknown parameter 'tags'")),
    ],
)
def test_bad_build_parameters_are_named(
    with_: dict[str, object], expected: tuple[str, str]
) -> None:
    found = problems(BuildStage(), {"uses": "build", "with": with_})
    assert any(f == expected[0] and expected[1] in m for f, m in found), found


def test_a_build_takes_no_commands() -> None:
    found = problems(BuildStage(), {"uses": "build", "run": "make", "with": {"image": "a/b"}})
    assert found == [("run", "a build stage takes no 'run' commands: it builds 'with.dockerfile'")]


@pytest.mark.parametrize(
    ("with_", "expected"),
    [
        ({"image": "a/b"}, ["Dockerfile", ".dockerignore"]),
        ({"image": "a/b", "context": "app"}, ["app/Dockerfile", "app/.dockerignore"]),
        (
            {"image": "a/b", "context": "app/", "dockerfile": "docker/Dockerfile.prod"},
            ["docker/Dockerfile.prod", "app/.dockerignore"],
        ),
        ({"image": "A"}, []),
    ],
)
def test_the_cache_inputs_are_the_dockerfile_and_dockerignore(
    with_: dict[str, object], expected: list[str]
) -> None:
    spec = StageSpec.model_validate({"uses": "build", "with": with_})
    assert BuildStage().cache_inputs(spec) == expected


def test_the_build_kind_declares_that_it_produces_artifacts() -> None:
    assert BuildStage().produces_artifacts is True
    assert not getattr(PushStage(), "produces_artifacts", False)


@pytest.mark.parametrize(
    ("with_", "expected"),
    [
        ({}, []),
        ({"image": "127.0.0.1:5000/a", "credentials": "ci", "overwrite_tags": True}, []),
        ({"overwrite_tags": "yes"}, [("with.overwrite_tags", "expected true or false")]),
        ({"credentials": "a b"}, [("with.credentials", "'a b' is not a login name")]),
        ({"image": "x:1"}, [("with.image", "give the repository without a tag")]),
        (
            {"password": "hunter2"},
            [
                (
                    "with.password",
                    "registry logins are never written in the pipeline file: name a login"
                    " the daemon holds with 'with.credentials'",
                ),
                ("with.password", "unknown parameter 'password'"),
            ],
        ),
    ],
)
def test_push_parameters(with_: dict[str, object], expected: list[tuple[str, str]]) -> None:
    found = problems(PushStage(), {"uses": "push", "with": with_})
    assert len(found) == len(expected), found
    for (field, message), (want_field, want_words) in zip(found, expected, strict=True):
        assert field == want_field and want_words in message, found


@pytest.mark.parametrize(
    ("name", "registry", "path"),
    [
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app"),
        ("localhost/app", "localhost", "app"),
        ("registry.example.com/a/b/c", "registry.example.com", "a/b/c"),
        ("[::1]:5000/app", "[::1]:5000", "app"),
        ("team/app", "docker.io", "team/app"),
        ("app", "docker.io", "library/app"),
    ],
)
def test_repositories_split_into_registry_and_path(name: str, registry: str, path: str) -> None:
    assert check_repository(name) == name
    assert split_repository(name) == (registry, path)


@pytest.mark.parametrize(
    "name", ["", "App", "a//b", "a/b@sha256:00", "-a/b", "127.0.0.1:5000", "a/" + "b" * 300]
)
def test_what_is_not_a_repository(name: str) -> None:
    with pytest.raises(ValueError):
        check_repository(name)


def test_versions_and_commits_as_tags() -> None:
    assert docker_tag("1.4.0-rc.12+sha.1a2b3c4d5e6f") == "1.4.0-rc.12_sha.1a2b3c4d5e6f"
    assert docker_tag("1.4.0") == "1.4.0"
    assert commit_tag("1a2b3c4d5e6f7a8b9c0d" * 2) == "sha-1a2b3c4d5e6f"
    assert is_commit_tag("sha-1a2b3c4d5e6f")
    assert not is_commit_tag("1.4.0") and not is_commit_tag("sha-1a2b")
