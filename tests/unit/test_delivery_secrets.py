"""Environments take the daemon's secrets by reference."""

from __future__ import annotations

import pytest

from conveyor.daemon.delivery.environments import secrets_resolver
from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.secrets.providers import Secrets


async def test_an_environment_gets_the_values_of_the_secrets_it_names() -> None:
    secrets = Secrets(from_env=["DB_PASSWORD"], environ={"DB_PASSWORD": "s3cr3t-value"})
    resolve = secrets_resolver(secrets.values)
    assert await resolve("production", {"DATABASE_PASSWORD": "DB_PASSWORD"}) == {
        "DATABASE_PASSWORD": "s3cr3t-value"
    }
    assert await resolve("production", {}) == {}


async def test_a_secret_the_daemon_does_not_hold_refuses_the_deployment() -> None:
    resolve = secrets_resolver(Secrets().values)
    with pytest.raises(FailedPrecondition, match="does not hold: API_TOKEN") as err:
        await resolve("production", {"TOKEN": "API_TOKEN"})
    assert "s3cr3t" not in str(err.value)
