"""Environments: the pipeline file's ``environments:`` with diagnostics at
their lines, the env file, the configuration hash, and what a target is
given for one artifact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.delivery import environments as envs
from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.pipeline import EnvironmentSpec, TargetCheck, check_pipeline
from tests.support.repos import git, make_repo
from tests.unit.delivery.support import artifact

BASE = """\
name: shop
stages:
  service:
    run: 'true'
environments:
"""


def no_options(options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key in options:
        yield f"with.{key}", f"unknown option '{key}'"


TARGETS = {"process": TargetCheck(no_options, requires_command=True)}


def problems(text: str, **kwargs: Any) -> list[str]:
    _, diagnostics = check_pipeline(BASE + text, deploy_targets=TARGETS, **kwargs)
    return [str(d) for d in diagnostics]


def test_a_valid_environment_has_no_diagnostic() -> None:
    assert problems("  staging:\n    run: [python3, '{artifact}']\n    port: 8081\n") == []


@pytest.mark.parametrize(
    ("environments", "expected"),
    [
        (
            "  staging:\n    run: x\n    port: 8081\n    target: dokcer\n",
            "conveyor.yaml:9:13: environments.staging.target: unknown deploy target 'dokcer';"
            " installed targets: process",
        ),
        (
            "  staging:\n    port: 8081\n",
            "conveyor.yaml:6:3: environments.staging: the process target needs the service"
            " command in 'run'",
        ),
        (
            "  staging:\n    run: x\n    port: 8081\n    promote_from: stagign\n",
            "conveyor.yaml:9:19: environments.staging.promote_from: an environment cannot"
            " promote from itself",
        ),
        (
            "  a:\n    run: x\n    port: 8081\n  b:\n    run: x\n    port: 8081\n",
            "conveyor.yaml:11:11: environments.b.port: port 8081 is already the port of"
            " environment 'a'",
        ),
        (
            "  staging:\n    run: x\n    port: 80\n",
            "conveyor.yaml:8:11: environments.staging.port: must be at least 1024",
        ),
        (
            "  staging:\n    run: x\n    port: 8081\n    replicsa: 2\n",
            "conveyor.yaml:9:5: environments.staging.replicsa: unknown field 'replicsa';"
            " expected one of:",
        ),
        (
            "  staging:\n    run: x\n    port: 8081\n    health: {path: /h, command: check}\n",
            "conveyor.yaml:9:13: environments.staging.health: give either path or command",
        ),
        (
            "  staging:\n    run: x\n    port: 8081\n    with: {network: host}\n",
            "conveyor.yaml:9:12: environments.staging.with.network: unknown option 'network'",
        ),
        (
            "  bad name:\n    run: x\n    port: 8081\n",
            "conveyor.yaml:6:3: environments.bad name: invalid environment name 'bad name'",
        ),
    ],
    ids=[
        "unknown-target",
        "process-without-run",
        "promote-from-unknown",
        "same-port",
        "privileged-port",
        "unknown-field",
        "health-both-ways",
        "target-options",
        "bad-name",
    ],
)
def test_environment_problems_are_reported_at_their_line(environments: str, expected: str) -> None:
    found = problems(environments)
    if "promote_from: stagign" in environments:
        expected = (
            "conveyor.yaml:9:19: environments.staging.promote_from: unknown environment 'stagign';"
            " expected one of: (none)"
        )
    assert any(p.startswith(expected) for p in found), found


def test_promote_from_may_name_an_environment_of_the_daemons_configuration() -> None:
    text = "  production:\n    run: x\n    port: 8082\n    promote_from: staging\n"
    assert problems(text, environments=["staging"]) == []


def test_the_env_file_reads_keys_values_and_says_which_line_is_wrong() -> None:
    text = "# comment\nexport A=1\nB = 'two words'\n\nC=\"x=y\"\nD=\n"
    assert envs.parse_env_file(text, "deploy/prod.env") == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
        "D": "",
    }
    with pytest.raises(FailedPrecondition, match=r"env_file deploy/prod.env:2: expected KEY=VALUE"):
        envs.parse_env_file("A=1\nnot a line\n", "deploy/prod.env")


def test_the_configuration_hash_follows_values_and_shape_not_approval() -> None:
    spec = EnvironmentSpec.model_validate({"port": 8081, "run": ["x"]})
    base = envs.config_hash(spec, {"A": "1"})
    assert envs.config_hash(spec, {"A": "2"}) != base
    assert envs.config_hash(spec.model_copy(update={"replicas": 3}), {"A": "1"}) != base
    gated = spec.model_copy(update={"requires_approval": True, "promote_from": "staging"})
    assert envs.config_hash(gated, {"A": "1"}) == base


async def test_resolving_reads_the_env_file_at_the_artifacts_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shop", {"deploy/prod.env": "GREETING=from file\nDB=prod\n"})
    first = git("rev-parse", "HEAD", cwd=repo.path)
    repo.commit({"deploy/prod.env": "GREETING=changed later\n"}, "later")  # not the artifact's
    built = artifact(7, repository=str(repo.path), commit=first)
    spec = EnvironmentSpec.model_validate(
        {
            "port": 8082,
            "run": ["python3", "{artifact}", "--flag"],
            "config": {"GREETING": "from config"},
            "env_file": "deploy/prod.env",
            "health": {"command": ["check", "--quick"]},
        }
    )
    resolved = await envs.resolve(
        "production", spec, built, source="test", store=tmp_path / "store", secrets=envs.no_secrets
    )
    env = resolved.environment
    assert env.config == {"GREETING": "from config", "DB": "prod"}  # config wins over the file
    assert env.command == ("python3", f"{tmp_path}/store/sha256/{'0' * 63}7", "--flag")
    assert env.health.command == ("check", "--quick") and env.health.path == ""
    again_spec, file_config, source = envs.from_snapshot(resolved.snapshot)
    assert again_spec == spec and file_config == {"GREETING": "from file", "DB": "prod"}
    assert source == "test"
    missing = spec.model_copy(update={"env_file": "deploy/nope.env"})
    with pytest.raises(FailedPrecondition, match=r"env_file deploy/nope\.env does not exist"):
        await envs.resolve(
            "production", missing, built, source="t", store=tmp_path, secrets=envs.no_secrets
        )


async def test_secrets_are_refused_until_the_daemon_holds_some(tmp_path: Path) -> None:
    spec = EnvironmentSpec.model_validate(
        {"port": 8082, "run": ["x"], "secrets": {"DB_PASSWORD": "db-password"}}
    )
    with pytest.raises(FailedPrecondition, match=r"DB_PASSWORD \(secret 'db-password'\)"):
        await envs.resolve(
            "production", spec, artifact(), source="t", store=tmp_path, secrets=envs.no_secrets
        )
