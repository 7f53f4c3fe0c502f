"""Write the standard gRPC protos that clients of conveyord need into proto/.

Usage: python scripts/standard_protos.py [--check]

Clients in other languages need, besides proto/conveyor/v1: health checking
(grpc/health/v1/health.proto), server reflection (grpc/reflection/v1 and
v1alpha) and the rich error model (google/rpc/status.proto,
google/rpc/error_details.proto). They are written from the packages the
daemon serves them with, so they match exactly what it answers:
- google/rpc/*.proto are copied from googleapis-common-protos;
- the health and reflection files are rendered from the descriptors compiled
  into grpcio-health-checking and grpcio-reflection (those packages ship no
  .proto files), reflection v1 being v1alpha under its new package name.
No Python code is generated from them.

With --check, exit 1 if the files in proto/ differ from what would be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import google.rpc  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from conveyor.daemon.api.reflection import v1_file_descriptor

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _options(options: descriptor_pb2.FileOptions) -> list[str]:
    return [f"option {field.name} = {_value(value)};" for field, value in options.ListFields()]


class _Renderer:
    """A proto3 file from its descriptor: what protoc compiles back to the same descriptor."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.proto = proto
        self.lines: list[str] = []

    def _name(self, type_name: str) -> str:
        prefix = f".{self.proto.package}."
        return type_name.removeprefix(prefix) if type_name.startswith(prefix) else type_name

    def _type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type in _SCALARS:
            return _SCALARS[field.type]
        return self._name(field.type_name)

    def _field(
        self,
        field: descriptor_pb2.FieldDescriptorProto,
        indent: str,
        maps: dict[str, descriptor_pb2.DescriptorProto],
    ) -> None:
        label = ""
        kind = self._type(field)
        entry = maps.get(field.type_name)
        if entry is not None:
            key, value = entry.field
            kind = f"map<{self._type(key)}, {self._type(value)}>"
        elif field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
            label = "repeated "
        elif field.proto3_optional:
            label = "optional "
        options = " [deprecated = true]" if field.options.deprecated else ""
        self.lines.append(f"{indent}{label}{kind} {field.name} = {field.number}{options};")

    def _enum(self, enum: descriptor_pb2.EnumDescriptorProto, indent: str) -> None:
        self.lines.append(f"{indent}enum {enum.name} {{")
        for value in enum.value:
            self.lines.append(f"{indent}  {value.name} = {value.number};")
        self.lines.append(f"{indent}}}")

    def _message(self, message: descriptor_pb2.DescriptorProto, indent: str, scope: str) -> None:
        self.lines.append(f"{indent}message {message.name} {{")
        inner = indent + "  "
        scope = f"{scope}.{message.name}"
        maps = {
            f"{scope}.{nested.name}": nested
            for nested in message.nested_type
            if nested.options.map_entry
        }
        for enum in message.enum_type:
            self._enum(enum, inner)
        for nested in message.nested_type:
            if not nested.options.map_entry:
                self._message(nested, inner, scope)
        done_oneofs: set[int] = set()
        for field in message.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                index = field.oneof_index
                if index in done_oneofs:
                    continue
                done_oneofs.add(index)
                self.lines.append(f"{inner}oneof {message.oneof_decl[index].name} {{")
                for member in message.field:
                    if member.HasField("oneof_index") and member.oneof_index == index:
                        self._field(member, inner + "  ", maps)
                self.lines.append(f"{inner}}}")
            else:
                self._field(field, inner, maps)
        self.lines.append(f"{indent}}}")

    def render(self, source: str) -> str:
        proto = self.proto
        self.lines = [
            *(f"// {line}" for line in source.splitlines()),
            "//",
            "// From the gRPC project (Copyright The gRPC Authors, Apache License 2.0),",
            "// written from its descriptor by scripts/standard_protos.py; do not edit.",
            "",
            'syntax = "proto3";',
            "",
            f"package {proto.package};",
            "",
        ]
        self.lines += [f'import "{dependency}";' for dependency in proto.dependency]
        if proto.dependency:
            self.lines.append("")
        self.lines += _options(proto.options)
        for service in proto.service:
            self.lines += ["", f"service {service.name} {{"]
            for method in service.method:
                request = self._name(method.input_type)
                response = self._name(method.output_type)
                client = "stream " if method.client_streaming else ""
                server = "stream " if method.server_streaming else ""
                self.lines.append(
                    f"  rpc {method.name}({client}{request}) returns ({server}{response});"
                )
            self.lines.append("}")
        for enum in proto.enum_type:
            self.lines.append("")
            self._enum(enum, "")
        for message in proto.message_type:
            self.lines.append("")
            self._message(message, "", f".{proto.package}")
        return "\n".join(self.lines) + "\n"


def _file(module_descriptor: object, name: str) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module_descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
    proto.name = name
    return proto


def standard_protos() -> dict[str, str]:
    """Path under proto/ -> text, for every standard proto shipped."""
    googleapis = Path(google.rpc.__path__[0])
    files = {
        f"google/rpc/{name}": (googleapis / name).read_text()
        for name in ("status.proto", "error_details.proto")
    }
    rendered = {
        "grpc/health/v1/health.proto": (
            _file(health_pb2.DESCRIPTOR, "grpc/health/v1/health.proto"),
            "gRPC health checking, as served by grpcio-health-checking.\n"
            "Canonical: https://github.com/grpc/grpc-proto/blob/master/grpc/health/v1/health.proto",
        ),
        "grpc/reflection/v1alpha/reflection.proto": (
            _file(reflection_pb2.DESCRIPTOR, "grpc/reflection/v1alpha/reflection.proto"),
            "gRPC server reflection (v1alpha, deprecated), as served by grpcio-reflection.\n"
            "Canonical: https://github.com/grpc/grpc-proto/blob/master/"
            "grpc/reflection/v1alpha/reflection.proto",
        ),
        "grpc/reflection/v1/reflection.proto": (
            v1_file_descriptor(),
            "gRPC server reflection v1, as conveyord serves it.\n"
            "Canonical: https://github.com/grpc/grpc-proto/blob/master/"
            "grpc/reflection/v1/reflection.proto",
        ),
    }
    for path, (proto, source) in rendered.items():
        files[path] = _Renderer(proto).render(source)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if proto/ is stale")
    args = parser.parse_args()
    stale: list[str] = []
    for path, text in standard_protos().items():
        target = PROTO_ROOT / path
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(path)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote proto/{path}")
    if stale:
        print("standard protos are stale; run scripts/standard_protos.py: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
