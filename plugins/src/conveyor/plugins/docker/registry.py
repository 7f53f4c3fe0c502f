"""What a tag names in a registry, asked over the Registry HTTP API v2
(the OCI distribution API), so a push never moves a version tag silently.

``GET /v2/<name>/manifests/<tag>`` with the manifest media types in
``Accept`` answers 404 (no such tag) or the manifest, whose ``config.digest``
is the image id: the identity Conveyor records. Logins follow the
registry's challenge (``WWW-Authenticate``): HTTP Basic, or a bearer token
fetched from the realm it names (with the login, when there is one).

Blocking (urllib): call from a worker thread.

Registries the engine treats as insecure (``InsecureRegistryCIDRs`` such as
the default 127.0.0.0/8, or an insecure registry in its configuration) are
reached as the engine reaches them: HTTPS without certificate checks, then
plain HTTP. Others get HTTPS only, trusting the system's CAs plus
``/etc/docker/certs.d/<registry>/ca.crt`` when present.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Final

from conveyor.plugins.docker.references import DOCKER_HUB, DOCKER_HUB_API

MANIFEST_TYPES: Final = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
#: Seconds for one HTTP request to the registry.
TIMEOUT: Final = 15.0
#: Where Docker keeps a registry's own CA certificate.
CERTS_D: Final = Path("/etc/docker/certs.d")
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


class RegistryError(Exception):
    """The registry could not say what a tag names; the message says why."""


@dataclass(frozen=True)
class Login:
    """A username and password for one registry."""

    username: str
    password: str

    def __repr__(self) -> str:  # never the password
        return f"Login(username={self.username!r})"


@dataclass(frozen=True)
class TagState:
    """What a tag names in the registry."""

    manifest_digest: str
    media_type: str
    #: The image id (config digest); "" for a multi-platform index.
    config_digest: str


def host_of(registry: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if ":" in registry else registry


def is_insecure(registry: str, engine_registry_config: Mapping[str, Any]) -> bool:
    """Whether the engine reaches ``registry`` without TLS checks (its
    ``docker info`` RegistryConfig: insecure CIDRs and configured registries)."""
    configs = engine_registry_config.get("IndexConfigs") or {}
    config = configs.get(registry)
    if isinstance(config, Mapping) and "Secure" in config:
        return not config["Secure"]
    cidrs = []
    for cidr in engine_registry_config.get("InsecureRegistryCIDRs") or []:
        try:
            cidrs.append(ipaddress.ip_network(cidr))
        except ValueError:
            continue
    host = host_of(registry)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        addresses = {host}
    for address in addresses:
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_loopback or any(ip in cidr for cidr in cidrs):
            return True
    return False


class RegistryClient:
    """Reads manifests of one registry (``127.0.0.1:5000``, ``docker.io``)."""

    def __init__(self, registry: str, login: Login | None, *, insecure: bool) -> None:
        self.registry = registry
        self.login = login
        self.insecure = insecure
        self._host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self._token: str | None = None
        self._scheme: str | None = None
        #: No proxy for a registry on this machine.
        self._proxies: dict[str, str] | None = {} if host_of(self._host) in LOOPBACK_HOSTS else None
        self._openers: dict[str, urllib.request.OpenerDirector] = {}

    def _opener(self, scheme: str) -> urllib.request.OpenerDirector:
        """The opener for ``scheme``, made on first use (loading CA
        certificates takes tens of milliseconds)."""
        opener = self._openers.get(scheme)
        if opener is None:
            handlers: list[urllib.request.BaseHandler] = []
            if scheme == "https":
                handlers.append(urllib.request.HTTPSHandler(context=self._tls()))
            if self._proxies is not None:
                handlers.append(urllib.request.ProxyHandler(self._proxies))
            opener = self._openers[scheme] = urllib.request.build_opener(*handlers)
        return opener

    def _tls(self) -> ssl.SSLContext:
        if self.insecure:  # as the engine: no certificate checks
            unchecked = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            unchecked.check_hostname = False
            unchecked.verify_mode = ssl.CERT_NONE
            return unchecked
        ca = CERTS_D / self.registry / "ca.crt"
        return ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)

    def tag(self, path: str, tag: str) -> TagState | None:
        """What ``path:tag`` names, or None when the registry has no such tag
        (or no such repository). Raises RegistryError."""
        accept = ", ".join(MANIFEST_TYPES)
        status, headers, body = self._get(
            f"/v2/{path}/manifests/{urllib.parse.quote(tag)}", {"Accept": accept}, path
        )
        if status == 404:
            return None
        if status != 200:
            raise RegistryError(
                f"registry {self.registry} answered {status} for {path}:{tag}: {_errors(body)}"
            )
        try:
            manifest = json.loads(body)
        except ValueError:
            raise RegistryError(
                f"registry {self.registry} sent a manifest for {path}:{tag} that is not JSON"
            ) from None
        media_type = str(headers.get("content-type", "")).split(";")[0].strip()
        media_type = str(manifest.get("mediaType") or media_type)
        config = manifest.get("config")
        config_digest = str(config.get("digest", "")) if isinstance(config, dict) else ""
        return TagState(str(headers.get("docker-content-digest", "")), media_type, config_digest)

    # -- HTTP --------------------------------------------------------------------------

    def _get(
        self, route: str, headers: dict[str, str], path: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        status, answer, body = self._request(route, headers)
        if status == 401 and self._token is None:
            challenge = answer.get("www-authenticate", "")
            self._token = self._authorize(challenge, path)
            status, answer, body = self._request(route, headers)
        if status == 401:
            who = f"user {self.login.username!r}" if self.login else "no login"
            raise RegistryError(
                f"registry {self.registry} refused the credentials ({who}): {_errors(body)}"
            )
        if status == 403:
            raise RegistryError(f"registry {self.registry} denied access: {_errors(body)}")
        return status, answer, body

    def _request(
        self, route: str, headers: dict[str, str], url: str | None = None
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = dict(headers)
        if url is None and self._token:
            headers["Authorization"] = self._token
        if url is not None:
            return self._open(url, headers)
        for scheme in self._schemes():
            try:
                result = self._open(f"{scheme}://{self._host}{route}", headers, scheme)
            except _Unreachable as exc:
                if scheme == "https" and self.insecure and self._scheme is None:
                    continue  # an insecure registry may speak plain HTTP
                raise RegistryError(f"registry {self.registry} is unreachable: {exc}") from None
            self._scheme = scheme
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _schemes(self) -> list[str]:
        if self._scheme:
            return [self._scheme]
        return ["https", "http"] if self.insecure else ["https"]

    def _open(
        self, url: str, headers: dict[str, str], scheme: str = "https"
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers (names in lower case) and body of one request."""
        opener = self._opener(scheme)
        request = urllib.request.Request(url, headers=headers)
        try:
            with opener.open(request, timeout=TIMEOUT) as response:
                return (
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read(),
                )
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _Unreachable(_reason(exc)) from None

    def _authorize(self, challenge: str, path: str) -> str:
        """The ``Authorization`` value answering the registry's challenge."""
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() == "basic":
            if self.login is None:
                raise RegistryError(
                    f"registry {self.registry} needs a login: give the stage"
                    " 'with.credentials', or log in the daemon's user (docker login)"
                )
            return _basic(self.login)
        if scheme.lower() == "bearer" and params.get("realm"):
            query = {"service": params.get("service", ""), "scope": f"repository:{path}:pull"}
            url = params["realm"] + "?" + urllib.parse.urlencode(query)
            headers = {"Authorization": _basic(self.login)} if self.login else {}
            try:
                status, _, body = self._request("", headers, url)
            except _Unreachable as exc:
                raise RegistryError(
                    f"token service {params['realm']} is unreachable: {exc}"
                ) from None
            if status != 200:
                raise RegistryError(
                    f"registry {self.registry} refused a token ({status}): {_errors(body)}"
                )
            try:
                answer = json.loads(body)
            except ValueError:
                answer = {}
            token = answer.get("token") or answer.get("access_token")
            if not token:
                raise RegistryError(f"the token service of {self.registry} sent no token")
            return f"Bearer {token}"
        challenge = challenge or "no challenge"
        raise RegistryError(f"registry {self.registry} asks for an unsupported login ({challenge})")


class _Unreachable(Exception):
    pass


def _basic(login: Login) -> str:
    pair = f"{login.username}:{login.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


def _errors(body: bytes) -> str:
    """The registry's error messages (``{"errors": [{"code", "message"}]}``)."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, Iterable) and not isinstance(errors, str | bytes):
        words = [
            f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
            for e in errors
            if isinstance(e, dict)
        ]
        if words:
            return "; ".join(words)
    text = body.decode("utf-8", "replace").strip()
    return text[:200] or "no details"
