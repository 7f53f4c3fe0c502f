"""The standard protos shipped under proto/ for clients in other languages
compile to exactly what the daemon serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_tools import protoc

from conveyor.daemon.api.reflection import v1_file_descriptor

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_standard_protos_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "standard_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _served(module_descriptor: object) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module_descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
    return proto


def _without_json_names(proto: descriptor_pb2.FileDescriptorProto) -> None:
    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in proto.message_type:
        clear(message)


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("grpc/health/v1/health.proto", _served(health_pb2.DESCRIPTOR)),
        ("grpc/reflection/v1alpha/reflection.proto", _served(reflection_pb2.DESCRIPTOR)),
        ("grpc/reflection/v1/reflection.proto", v1_file_descriptor()),
        ("google/rpc/status.proto", _served(status_pb2.DESCRIPTOR)),
        ("google/rpc/error_details.proto", _served(error_details_pb2.DESCRIPTOR)),
    ],
)
def test_a_shipped_proto_compiles_to_the_served_descriptor(
    path: str, served: descriptor_pb2.FileDescriptorProto, tmp_path: Path
) -> None:
    out = tmp_path / "set.pb"
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--descriptor_set_out={out}", path]
    )
    assert code == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for proto in (compiled, served):
        proto.name = path
        _without_json_names(proto)
    assert compiled == served
