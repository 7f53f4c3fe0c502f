"""The secrets a daemon holds, from its two providers: the encrypted file
in its home (:mod:`.store`) and its own environment (``secrets_from_env``).

Loaded at start-up and again whenever the file changes (:meth:`Secrets.watch`
polls it): a ``conveyord secrets set`` reaches the next stage that starts.
Every value loaded is also handed to the process-wide redactor
(:mod:`.redaction`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from conveyor.daemon.secrets import store
from conveyor.daemon.secrets.masking import Masker
from conveyor.daemon.secrets.redaction import REDACTOR

log = logging.getLogger(__name__)

#: Seconds between two looks at the secrets file.
WATCH_INTERVAL: Final = 1.0


@dataclass(frozen=True)
class SecretCatalog:
    """What a pipeline file is checked against: the names of the secrets
    the daemon holds, and which secret's value (in any form) a text holds."""

    names: Collection[str]
    masker: Masker

    def holder(self, text: str) -> str | None:
        """The name of a secret whose value is in ``text``, or None."""
        return self.masker.owner(text)


class Secrets:
    """The secrets of one daemon: ``file`` (``None``: no file provider,
    sealed with the key from ``environ`` or ``key_file``) and the variables
    of ``environ`` named in ``from_env``.

    ``generation`` counts the changes: anything computed from the secrets
    (a checked pipeline, a masker) is good while it stays the same.
    """

    def __init__(
        self,
        *,
        file: Path | None = None,
        key_file: Path | None = None,
        from_env: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = environ or {}
        self.file = file
        self.key_file = key_file
        self._env_key = environ.get(store.KEY_VARIABLE, "")
        self._from_env = self._read_environment(from_env, environ)
        self._file_values: dict[str, str] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._values: dict[str, str] = {}
        self.generation = 0
        self._maskers: dict[frozenset[str], Masker] = {}
        self._catalog = SecretCatalog(frozenset(), Masker({}))
        #: Set (and replaced) each time :meth:`watch` has reloaded changed secrets.
        self.reloaded = trio.Event()
        self._publish()

    @staticmethod
    def _read_environment(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for name in names:
            value = environ.get(name)
            if value is None:
                log.warning("secrets_from_env: %s is not set in the daemon's environment", name)
                continue
            try:
                values[store.check_name(name)] = store.check_value(name, value)
            except store.SecretsError as exc:
                log.warning("secrets_from_env: %s; it is not given to stages", exc)
        return values

    # -- loading ------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the file again if it changed; True when the secrets did.

        Blocking: call it in a worker thread. Raises
        :class:`~conveyor.daemon.secrets.store.SecretsError` when the file
        cannot be read with the key (the secrets then stay as they were).
        """
        if self.file is None:
            return False
        stamp = store.file_stamp(self.file)
        if stamp == self._stamp:
            return False
        key = None
        if stamp is not None:
            assert self.key_file is not None
            key = store.load_key(self.key_file, {store.KEY_VARIABLE: self._env_key})
        values = store.read_secrets(self.file, key)
        self._stamp = stamp
        if values == self._file_values:
            return False
        self._file_values = values
        self._publish()
        return True

    def _publish(self) -> None:
        both = sorted(set(self._file_values) & set(self._from_env))
        if both:
            log.warning(
                "secrets %s are defined in %s and in the environment; the file's values are used",
                ", ".join(both),
                self.file,
            )
        self._values = {**self._from_env, **self._file_values}
        REDACTOR.add(self._values)
        self.generation += 1
        self._maskers = {}
        self._catalog = SecretCatalog(frozenset(self._values), Masker(self._values))

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload whenever the file changes, until cancelled; a file that
        cannot be read is logged and the secrets stay as they were."""
        task_status.started()
        if self.file is None:
            return
        while True:
            await trio.sleep(WATCH_INTERVAL)
            try:
                changed = await trio.to_thread.run_sync(self.load)
            except (store.SecretsError, OSError, ValueError) as exc:
                log.error("cannot reload the secrets (keeping the ones loaded): %s", exc)
                continue
            if changed:
                log.info("secrets reloaded: %d defined", len(self._values))
                self.reloaded.set()
                self.reloaded = trio.Event()

    # -- reading --------------------------------------------------------------------------

    def names(self) -> frozenset[str]:
        return frozenset(self._values)

    def catalog(self) -> SecretCatalog:
        return self._catalog

    def values(self, names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """The values of ``names`` that are defined, and the names that are not."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for name in names:
            if name in self._values:
                found[name] = self._values[name]
            else:
                missing.append(name)
        return found, missing

    def masker(self, names: Iterable[str]) -> Masker:
        """A masker for the values of ``names`` (those defined), made once
        per set of names and generation."""
        key = frozenset(names)
        masker = self._maskers.get(key)
        if masker is None:
            masker = self._maskers[key] = Masker(self.values(key)[0])
        return masker
