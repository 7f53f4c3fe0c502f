"""The ``docker`` and ``swarm`` deploy targets' pure parts: options, image
references, Swarm port templates, task states. (Against the real engine:
tests/integration/test_deploy_docker.py and test_deploy_swarm.py.)"""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.plugin import TargetError
from conveyor.plugins.targets.docker import DockerTarget, engine_time
from conveyor.plugins.targets.engine import image_reference
from conveyor.plugins.targets.swarm import (
    SwarmTarget,
    escape_template,
    port_template,
    service_name,
)
from tests.support.targets import image_artifact

IMAGE = "sha256:" + "ab" * 32


def test_docker_options_are_validated_with_actionable_messages() -> None:
    target = DockerTarget()
    assert list(target.validate({})) == []
    assert list(target.validate({"init": False, "stop_signal": "SIGQUIT"})) == []
    problems = dict(target.validate({"init": "yes", "stop_sgnal": "SIGTERM"}))
    assert problems["with.init"] == "expected true or false, got the string 'yes'"
    assert problems["with.stop_sgnal"] == (
        "unknown parameter 'stop_sgnal'; the docker target accepts: init, stop_signal;"
        " did you mean 'stop_signal'?"
    )
    assert dict(target.validate({"stop_signal": "TERM; rm"})) == {
        "with.stop_signal": "expected a signal name (SIGTERM, SIGQUIT) or number, got 'TERM; rm'"
    }


def test_swarm_options_are_validated() -> None:
    target = SwarmTarget()
    assert list(target.validate({"constraints": ["node.role == manager"], "init": True})) == []
    problems = dict(target.validate({"constraints": "node.role == manager", "x": 1}))
    assert problems["with.constraints"] == "expected a list, got the string 'node.role == manager'"
    assert problems["with.x"] == (
        "unknown parameter 'x'; the swarm target accepts: init, constraints"
    )


def test_an_image_runs_by_its_pushed_manifest_digest_else_by_its_id() -> None:
    local = image_artifact(IMAGE, "127.0.0.1:5000/team/app")
    assert image_reference(local) == IMAGE
    pushed = replace(
        local, pushed_to=("127.0.0.1:5000/team/app",), manifest_digest="sha256:" + "cd" * 32
    )
    assert image_reference(pushed) == "127.0.0.1:5000/team/app@sha256:" + "cd" * 32


def test_swarm_slots_name_their_ports_through_a_template() -> None:
    assert port_template((18101, 18102)) == "PORT=1810{{.Task.Slot}}"
    assert port_template(tuple(range(18101, 18110))) == "PORT=1810{{.Task.Slot}}"
    with pytest.raises(TargetError, match="1 to 9 replicas"):
        port_template(tuple(range(18101, 18111)))
    with pytest.raises(TargetError, match="not <prefix>1"):
        port_template((18100, 18101))
    with pytest.raises(TargetError, match="not <prefix>1"):
        port_template((18101, 18103))


def test_configuration_values_are_escaped_from_swarm_templates() -> None:
    assert escape_template("plain") == "plain"
    assert escape_template("a{{.Node.ID}}b}}") == 'a{{"{{"}}.Node.ID}}b}}'


def test_service_names_are_per_environment_and_daemon() -> None:
    name = service_name("owner-1", "staging")
    assert name.startswith("conveyor-staging-") and len(name) == len("conveyor-staging-") + 8
    assert service_name("owner-2", "staging") != name
    assert service_name("owner-1", "prod/eu_1").startswith("conveyor-prod-eu-1-")


def test_engine_time_stamps_are_read_to_the_microsecond() -> None:
    assert engine_time("1970-01-01T00:00:01.5Z") == 1.5
    assert engine_time("2024-05-01T10:20:30.123456789Z") == pytest.approx(1714558830.123456789)
    assert engine_time("") == 0.0
    assert engine_time("0001-01-01T00:00:00Z") == 0.0
