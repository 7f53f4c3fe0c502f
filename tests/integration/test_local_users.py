"""Another local user: kept off the daemon's socket, unable to use a token it
does not hold, and, on a socket it is allowed to reach, known by its uid
with the roles the access file gives it (reloaded on SIGHUP)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import audit_pb2
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port
from tests.support.repos import make_repo
from tests.support.users import local_user, run_as

PROBE = """
home_socket, shared_socket, token_file, tcp, repo = sys.argv[3:8]
out = {}
raw = socket.socket(socket.AF_UNIX)
try:
    raw.connect(home_socket)
    out["home_socket"] = "connected"
except OSError as exc:
    out["home_socket"] = errno.errorcode[exc.errno]
try:
    open(token_file).read()
    out["token_file"] = "read"
except OSError as exc:
    out["token_file"] = errno.errorcode[exc.errno]

def code(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name + ": " + exc.details()

with grpc.insecure_channel("unix://" + shared_socket) as channel:
    stub = service_pb2_grpc.ConveyorServiceStub(channel)
    me = stub.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10)
    out["whoami"] = [me.identity, me.auth_method, list(me.roles)]
    out["status"] = code(
        lambda: stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10))
    out["submit"] = code(lambda: stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=repo, ref="main"), timeout=10))
guess = "cvt_0123456789ab_" + "A" * 43
with grpc.insecure_channel(tcp) as channel:
    stub = service_pb2_grpc.ConveyorServiceStub(channel)
    out["guessed_token"] = code(lambda: stub.GetServerStatus(
        server_pb2.GetServerStatusRequest(), timeout=10,
        metadata=(("authorization", "Bearer " + guess),)))
print(json.dumps(out))
"""

STATUS = """
with grpc.insecure_channel("unix://" + sys.argv[3]) as channel:
    stub = service_pb2_grpc.ConveyorServiceStub(channel)
    try:
        stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
        print(json.dumps("OK"))
    except grpc.RpcError as exc:
        print(json.dumps(exc.code().name))
"""


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    with local_user() as made:
        yield made


def _wait_for_log(daemon: DaemonProcess, text: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while daemon.log_path.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"the daemon never logged {text!r}"
        time.sleep(0.05)


def test_another_local_user_is_kept_out_and_known_by_its_uid(
    user: pwd.struct_passwd, tmp_path: Path
) -> None:
    private = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # 0700: the daemon's
    shared = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    shared.chmod(0o755)  # others may reach the shared socket, not the home's
    home = private / "home"
    home.mkdir(mode=0o700)
    access = home / "access.toml"
    access.write_text(f'[identities.{user.pw_name}]\nroles = ["viewer"]\n')
    token_file = shared / "token"
    port = free_port()
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: x\nstages: {s: {run: 'true'}}\n"})
    daemon = DaemonProcess(
        home,
        args=[
            "--listen",
            f"unix://{home / 'conveyord.sock'}",
            "--listen",
            f"unix://{shared / 'conveyord.sock'}",
            "--listen",
            f"127.0.0.1:{port}",
            "--socket-mode",
            "0666",
        ],
    ).start()
    try:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, daemon.issue_token("ops").encode())
        os.close(fd)
        assert (shared / "conveyord.sock").stat().st_mode & 0o777 == 0o666
        seen = run_as(
            user,
            PROBE,
            str(home / "conveyord.sock"),
            str(shared / "conveyord.sock"),
            str(token_file),
            f"127.0.0.1:{port}",
            str(repo.path),
        )
        assert seen["home_socket"] == "EACCES", "the home (0700) keeps others off its socket"
        assert seen["token_file"] == "EACCES", "a token file of another user cannot be read"
        assert seen["guessed_token"].startswith("UNAUTHENTICATED: the bearer token is not valid")
        assert seen["whoami"] == [user.pw_name, "unix", ["viewer"]]
        assert seen["status"] == "OK"
        assert seen["submit"].startswith("PERMISSION_DENIED: ")
        assert f"{user.pw_name} (unix) may not call SubmitRun" in seen["submit"]
        events = daemon.stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(identity=user.pw_name, action="SubmitRun"),
            timeout=10,
        ).events
        assert [(e.outcome, e.auth_method) for e in events] == [("denied", "unix")]
        assert f"uid={user.pw_uid}" in events[0].peer

        # SIGHUP reads the access file again: the user loses its role
        access.write_text(f"[identities.{user.pw_name}]\nroles = []\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        _wait_for_log(daemon, "access file reloaded", 1)
        assert run_as(user, STATUS, str(shared / "conveyord.sock")) == "PERMISSION_DENIED"
        # a mistake in the file keeps the policy in force
        access.write_text(f'[identities.{user.pw_name}]\nroles = ["superuser"]\n')
        daemon.proc.send_signal(signal.SIGHUP)
        _wait_for_log(daemon, "access file not reloaded", 1)
        assert "unknown role 'superuser'" in daemon.log_path.read_text()
        assert run_as(user, STATUS, str(shared / "conveyord.sock")) == "PERMISSION_DENIED"
    finally:
        daemon.stop()
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_the_socket_is_never_reachable_by_others_while_it_is_made(daemon: DaemonProcess) -> None:
    """The socket file appears with its final mode: it is bound in a 0700
    folder and moved into place, not chmod-ed after the fact."""
    assert daemon.socket.stat().st_mode & 0o777 == 0o600
    assert not [p for p in daemon.home.iterdir() if p.name.startswith(".conveyord-")]
    private = daemon.home / "run"
    assert private.stat().st_mode & 0o777 == 0o700
    assert (private / "grpc.sock").stat().st_mode & 0o777 == 0o600
    with grpc.insecure_channel(f"unix://{private / 'grpc.sock'}") as channel:
        from conveyor.v1 import server_pb2, service_pb2_grpc

        stub = service_pb2_grpc.ConveyorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (
            "a connection to gRPC's own socket, past the relay, has no identity"
        )
