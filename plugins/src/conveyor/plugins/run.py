"""The generic ``run`` stage kind: shell commands in the run's workspace.

```yaml
stages:
  test:
    run:
      - pip install -e .
      - pytest -q
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

from conveyor.daemon.hookspecs import hookimpl
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.stages import StageContext, StageKind, StageOutcome

SHELLS = ("sh", "bash")


def shell_script(commands: list[str]) -> str:
    """One script that echoes each command (in bold) then runs it."""
    lines: list[str] = []
    for command in commands:
        banner = f"\x1b[1m$ {command}\x1b[0m"
        lines.append(f"printf '%s\\n' {shlex.quote(banner)}")
        lines.append(command)
    return "\n".join(lines) + "\n"


class RunStage:
    name = "run"
    description = "Run shell commands in the workspace (one shell, stops at the first failure)"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        if not spec.run:
            yield "run", "a 'run' stage needs at least one command in 'run'"
        for key in spec.with_:
            if key != "shell":
                yield f"with.{key}", f"unknown parameter {key!r}; the run kind accepts: shell"
        shell = spec.with_.get("shell", "sh")
        if shell not in SHELLS:
            yield "with.shell", f"unsupported shell {shell!r}; expected one of: {', '.join(SHELLS)}"

    async def run(self, ctx: StageContext) -> StageOutcome:
        shell = str(ctx.spec.with_.get("shell", "sh"))
        code = await ctx.run_process([shell, "-e", "-c", shell_script(ctx.spec.run)])
        return StageOutcome.from_exit_code(code)


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [RunStage()]
