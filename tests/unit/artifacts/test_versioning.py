"""SemVer 2.0.0 versions of artifacts."""

from __future__ import annotations

import pytest

from conveyor.daemon.artifacts.versioning import (
    VersionError,
    parse_version,
    version_for_run,
    version_from_tags,
)

COMMIT = "1a2b3c4d5e6f7890abcdef1234567890abcdef12"


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0",
        "1.4.0",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-rc.1+build.1",
        "1.2.3+sha.1a2b",
    ],
)
def test_valid_versions_round_trip(text: str) -> None:
    assert str(parse_version(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v1.2.3", "without the leading 'v'"),
        ("1.2", "not a Semantic Version"),
        ("01.2.3", "no leading zeros"),
        ("1.2.3-01", "not a Semantic Version"),
        ("1.2.3-", "not a Semantic Version"),
        ("1.2.3+", "not a Semantic Version"),
        ("", "non-empty"),
        ("1.2.3-" + "a" * 200, "longer than 128"),
    ],
)
def test_invalid_versions_say_why(text: str, why: str) -> None:
    with pytest.raises(VersionError, match=why):
        parse_version(text)


def test_a_version_tag_on_the_commit_wins() -> None:
    version = version_for_run(
        tags=["refs/tags/v1.3.2", "v1.3.10", "nightly"], base="2.0.0", run_number=7, commit=COMMIT
    )
    assert str(version) == "1.3.10"


def test_without_a_tag_the_base_gets_the_run_number_and_commit() -> None:
    version = version_for_run(tags=[], base="1.4.0", run_number=12, commit=COMMIT)
    assert str(version) == "1.4.0-rc.12+sha.1a2b3c4d5e6f"
    assert version.docker_tag() == "1.4.0-rc.12_sha.1a2b3c4d5e6f"


def test_a_prerelease_base_keeps_its_channel() -> None:
    version = version_for_run(tags=[], base="2.0.0-beta", run_number=3, commit=COMMIT)
    assert str(version) == "2.0.0-beta.3+sha.1a2b3c4d5e6f"


def test_precedence_follows_semver() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    versions = [parse_version(v) for v in ordered]
    assert sorted(versions, key=lambda v: v.precedence_key()) == versions
    assert str(version_from_tags(["v1.0.0-rc.1", "v1.0.0"])) == "1.0.0"
