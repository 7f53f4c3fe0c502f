"""``secrets:`` in a pipeline file (issue 11, item 5): names the daemon
holds, at most once, not clashing with ``env``; and no value written in the
file that holds a secret's value, in any form."""

from __future__ import annotations

import base64

import pytest

from conveyor.daemon.pipeline import check_pipeline
from conveyor.daemon.secrets.providers import SecretCatalog, Secrets

VALUE = "tok-abcdef123456"


@pytest.fixture
def catalog() -> SecretCatalog:
    return Secrets(
        from_env=["DEPLOY_TOKEN", "OTHER"],
        environ={"DEPLOY_TOKEN": VALUE, "OTHER": "zzzz-99999999"},
    ).catalog()


def _problems(text: str, catalog: SecretCatalog) -> list[str]:
    spec, diagnostics = check_pipeline(text, secrets=catalog)
    assert (spec is None) == bool(diagnostics)
    return [str(d) for d in diagnostics]


def test_stages_get_their_own_secrets_or_the_pipelines(catalog: SecretCatalog) -> None:
    spec, diagnostics = check_pipeline(
        "name: p\nsecrets: OTHER\nstages:\n  a: {run: x}\n  b: {run: x, secrets: [DEPLOY_TOKEN]}\n"
        "  c: {run: x, secrets: []}\n",
        secrets=catalog,
    )
    assert not diagnostics and spec is not None
    assert [spec.stage_secrets(n) for n in "abc"] == [["OTHER"], ["DEPLOY_TOKEN"], []]


def test_a_secret_the_daemon_does_not_hold_is_named_with_its_stage_and_line(
    catalog: SecretCatalog,
) -> None:
    assert _problems(
        "name: p\nsecrets: [NOPE]\nstages:\n  deploy:\n    run: x\n    secrets: DEPLY_TOKEN\n",
        catalog,
    ) == [
        "conveyor.yaml:2:11: secrets[0]: the pipeline asks for secret 'NOPE', which the"
        " daemon does not hold (conveyord secrets list); defined secrets: DEPLOY_TOKEN, OTHER",
        "conveyor.yaml:6:14: stages.deploy.secrets: stage 'deploy' asks for secret"
        " 'DEPLY_TOKEN', which the daemon does not hold (conveyord secrets list); defined"
        " secrets: DEPLOY_TOKEN, OTHER; did you mean 'DEPLOY_TOKEN'?",
    ]


def test_a_secret_twice_or_clashing_with_env_is_refused(catalog: SecretCatalog) -> None:
    problems = _problems(
        "name: p\nenv: {OTHER: x}\nsecrets: [OTHER]\nstages:\n"
        "  a:\n    run: x\n    secrets: [DEPLOY_TOKEN, DEPLOY_TOKEN]\n    env: {DEPLOY_TOKEN: y}\n"
        "  b: {run: x}\n",
        catalog,
    )
    assert problems == [
        "conveyor.yaml:2:7: env.OTHER: 'OTHER' is also the name of a secret that stages get;"
        " the secret would replace it: rename the variable",
        "conveyor.yaml:7:29: stages.a.secrets[1]: duplicate secret 'DEPLOY_TOKEN'",
        "conveyor.yaml:8:11: stages.a.env.DEPLOY_TOKEN: 'DEPLOY_TOKEN' is also the name of a"
        " secret stage 'a' gets; the secret would replace it: rename the variable",
    ]


@pytest.mark.parametrize(
    "written",
    [
        VALUE,
        f"Bearer {VALUE}",
        base64.b64encode(VALUE.encode()).decode(),
        base64.b64encode(f"user:{VALUE}".encode()).decode(),
        VALUE.encode().hex(),
    ],
)
def test_a_secret_value_written_in_env_is_refused_without_repeating_it(
    catalog: SecretCatalog, written: str
) -> None:
    problems = _problems(
        f"name: p\nstages:\n  deploy:\n    run: x\n    env:\n      TOKEN: '{written}'\n", catalog
    )
    assert problems == [
        "conveyor.yaml:6:14: stages.deploy.env.TOKEN: holds the value of secret DEPLOY_TOKEN;"
        " use secrets: [DEPLOY_TOKEN] instead"
    ]


def test_a_secret_value_in_commands_or_parameters_is_refused(catalog: SecretCatalog) -> None:
    problems = _problems(
        f"name: p\nenv: {{T: {VALUE}}}\nstages:\n  deploy:\n    run: [ok, 'curl -u x:{VALUE} h']\n"
        f"    with: {{auth: {{password: [{VALUE}]}}}}\n",
        catalog,
    )
    assert problems == [
        "conveyor.yaml:2:10: env.T: holds the value of secret DEPLOY_TOKEN; use secrets:"
        " [DEPLOY_TOKEN] instead",
        "conveyor.yaml:5:15: stages.deploy.run[1]: holds the value of secret DEPLOY_TOKEN;"
        " ask for it with secrets: [DEPLOY_TOKEN] and use $DEPLOY_TOKEN instead",
        "conveyor.yaml:6:30: stages.deploy.with.auth.password[0]: holds the value of secret"
        " DEPLOY_TOKEN; ask for it with secrets: [DEPLOY_TOKEN] and use $DEPLOY_TOKEN instead",
    ]
    assert not any(VALUE in p for p in problems)


def test_without_a_catalog_secrets_are_not_checked() -> None:
    spec, diagnostics = check_pipeline("name: p\nstages:\n  a: {run: x, secrets: [ANY]}\n")
    assert not diagnostics and spec is not None and spec.stage_secrets("a") == ["ANY"]


def test_a_secret_name_that_is_not_a_variable_name_is_refused() -> None:
    _, diagnostics = check_pipeline("name: p\nstages:\n  a: {run: x, secrets: [1-bad]}\n")
    assert [d.path for d in diagnostics] == ["stages.a.secrets[0]"]
