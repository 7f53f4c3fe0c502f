"""The CLI's connection to the daemon: made on first use, remade after outages."""

from __future__ import annotations

import os
import time

from conveyor.client.address import default_address
from conveyor.client.connection import ConveyorClient, TlsOptions, connect, read_token_file
from conveyor.client.errors import DaemonUnavailable

DEFAULT_CONNECT_TIMEOUT = 5.0
RECONNECT_ATTEMPTS = 4
# Consecutive stream breaks without progress before `logs`/`watch` give up.
STREAM_RETRIES = 3


def connect_timeout() -> float:
    """Seconds to wait for the daemon: `CONVEYOR_CONNECT_TIMEOUT`, default 5."""
    raw = os.environ.get("CONVEYOR_CONNECT_TIMEOUT", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT
    return value if value > 0 else DEFAULT_CONNECT_TIMEOUT


class Session:
    def __init__(
        self,
        address: str | None,
        output: str = "text",
        timeout: float | None = None,
        color: str = "auto",
        *,
        token_file: str | None = None,
        tls: TlsOptions | None = None,
    ):
        self.address = address or default_address()
        #: ``--token-file`` (beats CONVEYOR_TOKEN / CONVEYOR_TOKEN_FILE).
        self.token_file = token_file
        #: ``--tls-ca``/``--tls-cert``/``--tls-key`` (beat CONVEYOR_TLS_*).
        self.tls = tls
        self.output = output
        #: ``--color``: auto, always or never (see `terminal.use_color`).
        self.color = color
        self.timeout = connect_timeout() if timeout is None else timeout
        self._client: ConveyorClient | None = None

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def client(self) -> ConveyorClient:
        if self._client is None:
            token = read_token_file(self.token_file) if self.token_file else None
            self._client = connect(self.address, self.timeout, token=token, tls=self.tls)
        return self._client

    def reconnect(self) -> ConveyorClient:
        """A fresh connection, retried with backoff; raises DaemonUnavailable at the end."""
        self.close()
        delay = 0.5
        for attempt in range(RECONNECT_ATTEMPTS):
            time.sleep(delay)
            try:
                return self.client
            except DaemonUnavailable:
                if attempt == RECONNECT_ATTEMPTS - 1:
                    raise
                delay *= 2
        raise DaemonUnavailable(self.address)  # pragma: no cover - loop always returns/raises

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
