"""Image names and tags: what the ``image`` parameters accept, how a version
and a commit become tags, and which registry an image goes to.

The grammar is Docker's (``distribution/reference``): an optional registry
host (with a port), then lower-case path components. A name given to the
``build`` and ``push`` kinds is a *repository*, never a tag or a digest:
Conveyor names the tags itself.
"""

from __future__ import annotations

import re
from typing import Final

_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_LABEL: Final = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN: Final = rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
REPOSITORY_RE: Final = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)$"
)
TAG_RE: Final = re.compile(r"^[\w][\w.-]{0,127}$")
#: Longest repository name Docker accepts.
MAX_NAME: Final = 255
#: Where names without a registry go, and the host that serves its API.
DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
#: ``sha-`` and the first 12 hex digits of the commit: the commit's tag.
COMMIT_TAG_PREFIX: Final = "sha-"


def check_repository(name: str) -> str:
    """``name`` if it is a repository (``127.0.0.1:5000/team/app``); raises
    ValueError saying what is wrong otherwise."""
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"is longer than {MAX_NAME} characters")
    last = name.rsplit("/", 1)[-1]
    if "@" in name:
        raise ValueError(
            f"{name!r}: give the repository without a digest ({name.split('@', 1)[0]!r})"
        )
    if ":" in last:  # as Docker reads it: NAME:TAG
        bare = name[: len(name) - len(last)] + last.split(":", 1)[0]
        raise ValueError(
            f"{name!r}: give the repository without a tag ({bare!r}); Conveyor tags the"
            " image with the run's version and the commit"
        )
    match = REPOSITORY_RE.match(name)
    domain = match.group("domain") if match else None
    if match is None or (domain and not _is_host(domain) and not re.fullmatch(_COMPONENT, domain)):
        raise ValueError(
            f"{name!r} is not a repository name: [REGISTRY[:PORT]/]PATH with lower-case"
            " letters, digits and separators (., _, __, -), e.g. 127.0.0.1:5000/team/app"
        )
    return name


def split_repository(name: str) -> tuple[str, str]:
    """The registry host and the path in it: ``127.0.0.1:5000/team/app`` ->
    (``127.0.0.1:5000``, ``team/app``); ``app`` -> (``docker.io``, ``library/app``)."""
    match = REPOSITORY_RE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a repository name")
    domain, path = match.group("domain"), match.group("path")
    if domain and _is_host(domain):
        return domain, path
    # Like Docker: a first component that is not a host name is a Docker Hub path.
    path = name
    if "/" not in path:
        path = f"library/{path}"
    return DOCKER_HUB, path


def _is_host(domain: str) -> bool:
    """Docker's rule: a first component with a dot or a port, or
    ``localhost``, names a registry host."""
    return "." in domain or ":" in domain or domain == "localhost"


def docker_tag(version: str) -> str:
    """A SemVer version as a Docker tag: ``+`` is not allowed in tags, so
    build metadata is joined with ``_`` (``1.4.0-rc.12_sha.1a2b3c4d5e6f``),
    as the daemon's ``Version.docker_tag`` does."""
    return version.replace("+", "_")


def commit_tag(commit: str) -> str:
    """``sha-`` and the first 12 hex digits of the commit."""
    return f"{COMMIT_TAG_PREFIX}{commit[:12]}"


def is_commit_tag(tag: str) -> bool:
    """Whether ``tag`` is a commit's tag (``sha-1a2b3c4d5e6f``)."""
    return re.fullmatch(rf"{COMMIT_TAG_PREFIX}[0-9a-f]{{12}}", tag) is not None


def check_tag(tag: str) -> str:
    """``tag`` if Docker accepts it; raises ValueError otherwise."""
    if TAG_RE.match(tag) is None:
        raise ValueError(
            f"{tag!r} is not a valid Docker tag (letters, digits, _, . and -, at most"
            " 128 characters, not starting with . or -)"
        )
    return tag
