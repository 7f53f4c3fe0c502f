"""A third-party plugin, installed as its own distribution, adds a stage kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.plugins import install
from tests.support.repos import GitRepo, git

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "conveyor-plugin-changelog"


def test_installed_plugin_is_listed_and_its_stage_kind_runs(
    daemon_home: Path, tmp_path: Path, repo_factory: Callable[..., GitRepo]
) -> None:
    site = tmp_path / "site"
    install(PLUGIN, site)
    assert list(site.glob("conveyor_plugin_changelog-1.0.0.dist-info"))

    repo = repo_factory(
        {
            "conveyor.yaml": "name: release\nstages:\n  notes:\n    uses: changelog\n"
            "  check:\n    needs: [notes]\n    run: echo notes done\n"
        }
    )
    git("tag", "v1.0.0", cwd=repo.path)
    repo.commit({"a.txt": "1"}, "Add the a feature")
    repo.commit({"b.txt": "2"}, "Fix the b bug")

    daemon = DaemonProcess(daemon_home, env={"PYTHONPATH": str(site)}).start()
    try:
        plugins = {
            p.name: p for p in daemon.stub.ListPlugins(server_pb2.ListPluginsRequest()).plugins
        }
        listed = plugins["changelog"]
        assert (listed.distribution, listed.version) == ("conveyor-plugin-changelog", "1.0.0")
        assert listed.provides == ["stage kind: changelog"]
        assert listed.hooks == ["conveyor_stage_kinds"] and listed.error == ""

        run = daemon.wait(daemon.submit(repo.path).id)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
        notes = stage(run, "notes")
        assert notes.kind == "changelog"
        assert notes.report.kind == "changelog" and notes.report.counts["changes"] == 2
        log = daemon.logs(run.id, "notes").decode()
        assert "# Changes since v1.0.0" in log
        assert "Add the a feature" in log and "Fix the b bug" in log
    finally:
        daemon.stop()

    # without the plugin installed, the same pipeline is rejected up front
    plain = DaemonProcess(daemon_home).start()
    try:
        reply = plain.stub.ValidatePipeline(
            pipelines_pb2.ValidatePipelineRequest(content=(repo.path / "conveyor.yaml").read_text())
        )
        assert not reply.valid
        assert any("unknown stage kind 'changelog'" in d.message for d in reply.diagnostics)
    finally:
        plain.stop()
