"""Artifact versions: Semantic Versioning 2.0.0 (https://semver.org).

A commit tagged ``vX.Y.Z`` (or ``X.Y.Z``) is that version. Otherwise the
version is the pipeline's ``version:`` base with the run number as a
pre-release and the commit as build metadata:
``1.4.0-rc.12+sha.1a2b3c4d5e6f``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# The regular expression suggested by semver.org, unchanged.
SEMVER_RE: Final = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<prerelease>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
#: Longest version accepted (a Docker tag holds at most 128 characters).
MAX_LENGTH: Final = 128


class VersionError(ValueError):
    """Not a valid SemVer 2.0.0 version; the message says why."""


@dataclass(frozen=True, order=False)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    @property
    def core(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def is_release(self) -> bool:
        return not self.prerelease

    def docker_tag(self) -> str:
        """The version as a Docker tag: ``+`` is not allowed there, so build
        metadata is joined with ``_`` (as Helm and others do)."""
        return str(self).replace("+", "_")

    def precedence_key(self) -> tuple[object, ...]:
        """Sort key by SemVer precedence (build metadata ignored)."""

        def ident(part: str) -> tuple[int, int | str]:
            return (0, int(part)) if part.isdigit() else (1, part)

        pre: tuple[object, ...] = (
            (1,) if not self.prerelease else (0, *(ident(p) for p in self.prerelease))
        )
        return (self.major, self.minor, self.patch, pre)


def parse_version(text: str) -> Version:
    """Parse a SemVer 2.0.0 version (no leading ``v``).

    Raises :class:`VersionError` saying what is wrong.
    """
    if not isinstance(text, str) or not text:
        raise VersionError("a version must be a non-empty string like 1.4.0")
    if len(text) > MAX_LENGTH:
        raise VersionError(f"version is longer than {MAX_LENGTH} characters")
    if text[0] in "vV":
        raise VersionError(f"{text!r}: write the version without the leading 'v' ({text[1:]})")
    match = SEMVER_RE.match(text)
    if match is None:
        raise VersionError(
            f"{text!r} is not a Semantic Version (MAJOR.MINOR.PATCH, e.g. 1.4.0,"
            " optionally -PRERELEASE and +BUILD; no leading zeros)"
        )
    pre = match.group("prerelease")
    build = match.group("build")
    return Version(
        int(match.group("major")),
        int(match.group("minor")),
        int(match.group("patch")),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )


def version_from_tags(tags: list[str]) -> Version | None:
    """The highest release version among a commit's tags (``v1.2.3`` or
    ``1.2.3``; pre-release tags count too), or None."""
    found: list[Version] = []
    for tag in tags:
        name = tag.removeprefix("refs/tags/")
        name = name[1:] if name[:1] in ("v", "V") else name
        try:
            found.append(parse_version(name))
        except VersionError:
            continue
    if not found:
        return None
    return max(found, key=Version.precedence_key)


def version_for_run(
    *, tags: list[str], base: str | None, run_number: int, commit: str, channel: str = "rc"
) -> Version:
    """The version of what a run builds.

    A SemVer tag on the commit wins. Otherwise the pipeline's ``version:``
    base (default ``0.0.0``) with the run number as pre-release and the
    commit's first 12 hex digits as build metadata.
    """
    tagged = version_from_tags(tags)
    if tagged is not None:
        return tagged
    core = parse_version(base or "0.0.0")
    prerelease = core.prerelease or (channel, str(run_number))
    if core.prerelease:
        prerelease = (*core.prerelease, str(run_number))
    return Version(
        core.major,
        core.minor,
        core.patch,
        prerelease,
        ("sha", commit[:12]),
    )
