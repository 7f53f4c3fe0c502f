"""The generic ``run`` stage kind: shell commands in the run's workspace.

```yaml
stages:
  test:
    run:
      - python3 -m venv .venv          # the stage's own environment
      - .venv/bin/pip install -q -e . pytest
      - .venv/bin/python -m pytest -q
    with:
      shell: bash    # default: sh
```

All commands run in one shell with ``-e`` (stop at the first failure), so
``cd`` and ``export`` carry over from one line to the next, as in GitLab CI.
Each command is echoed into the log before it runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from conveyor.plugin import (
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageSpec,
    hookimpl,
)
from conveyor.plugins.parameters import Shell, invalid_parameters, read_parameters


class RunParameters(Parameters):
    """``with:`` of a ``run`` stage."""

    shell: Shell = "sh"


PARAMETERS = tuple(RunParameters.model_fields)


def shell_script(commands: list[str]) -> str:
    """One script that echoes each command (in bold) then runs it."""
    lines: list[str] = []
    for command in commands:
        banner = f"\x1b[1m$ {command}\x1b[0m"
        lines.append(f"printf '%s\\n' {shlex.quote(banner)}")
        lines.append(command)
    return "\n".join(lines) + "\n"


async def run_commands(ctx: StageContext, shell: Shell) -> int:
    """Run the stage's ``run:`` commands in one ``shell -e``, each echoed
    (see the module docstring); return the shell's exit code."""
    return await ctx.run_process([shell, "-e", "-c", shell_script(ctx.spec.run)])


class RunStage:
    name = "run"
    description = "Run shell commands in the workspace (one shell, stops at the first failure)"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        if not spec.run:
            yield "run", "a 'run' stage needs at least one command in 'run'"
        yield from read_parameters(RunParameters, spec, self.name)[1]

    async def run(self, ctx: StageContext) -> StageOutcome:
        params, problems = read_parameters(RunParameters, ctx.spec, self.name)
        if params is None:  # checked when the pipeline loaded: not reached
            return invalid_parameters(problems)
        return StageOutcome.from_exit_code(await run_commands(ctx, params.shell))


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [RunStage()]
