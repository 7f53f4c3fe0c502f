"""Fuzzing every ConveyorService RPC of a real daemon for a few seconds.

Requests are random bytes, valid messages with random field values of the
right types, and such messages truncated or with bytes flipped. Every answer
must be OK or a deliberate status code (never INTERNAL or UNKNOWN, which
mean a bug or a lost error), and the daemon must keep serving. The seed is
printed; set CONVEYOR_FUZZ_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import runs_pb2, service_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo

#: Seconds of fuzzing.
BUDGET = 4.0
BAD_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICE = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"]
PIPELINE = "name: fuzz\nstages:\n  s:\n    run: echo fuzz\n  t:\n    needs: [s]\n    run: 'true'\n"


class Fuzzer:
    def __init__(
        self, rng: random.Random, known: list[str], templates: dict[str, dict[str, Any]]
    ) -> None:
        self.rng = rng
        #: Values that reach deeper than random text: a real repository,
        #: run id, stage names, refs.
        self.known = known
        #: A valid request per message type, to mutate one field of.
        self.templates = templates

    def text(self) -> str:
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            return ""
        if choice == 1:
            return rng.choice(self.known)
        if choice == 2:
            return "".join(
                rng.choice("0123456789abcdef") for _ in range(rng.choice([4, 12, 20, 40]))
            )
        if choice == 3:
            return rng.choice(self.known) + rng.choice(["\n", "\x00", "/..", "x" * 300, "\x1b[2J"])
        if choice == 4:
            return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 2000)))
        if choice == 5:
            return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 50)))
        if choice == 6:
            return rng.choice(["main", "HEAD", "-x", "refs/heads/main", "conveyor.yaml", "s", "t"])
        return "a" * rng.choice([256, 1025, 4097, 70_000])

    def integer(self, bits: int) -> int:
        rng = self.rng
        top = 1 << (bits - 1)
        return rng.choice([0, 1, -1, rng.randrange(-1000, 1000), top - 1, -top])

    def message(self, descriptor: Descriptor) -> Message:
        template = self.templates.get(descriptor.name)
        if template is not None and self.rng.random() < 0.5:
            message = GetMessageClass(descriptor)(**template)
            if descriptor.fields and self.rng.random() < 0.8:
                self._set(message, self.rng.choice(descriptor.fields))
            return message
        message = GetMessageClass(descriptor)()
        for field in descriptor.fields:
            if self.rng.random() < 0.3:
                continue
            self._set(message, field)
        return message

    def _set(self, message: Message, field: FieldDescriptor) -> None:
        kind = field.type
        value: Any
        if kind == FieldDescriptor.TYPE_STRING:
            value = self.text()
        elif kind == FieldDescriptor.TYPE_BYTES:
            value = self.text().encode()
        elif kind == FieldDescriptor.TYPE_BOOL:
            value = self.rng.random() < 0.5
        elif kind == FieldDescriptor.TYPE_ENUM:
            value = self.rng.choice([*range(-1, 10), (1 << 31) - 1])
        elif kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
            value = self.integer(32)
        elif kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
            value = self.integer(64)
        else:
            return
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)

    def request(self, descriptor: Descriptor) -> bytes:
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            return rng.randbytes(rng.randrange(0, 200))
        data = self.message(descriptor).SerializeToString()
        if choice == 1 and data:
            return data[: rng.randrange(len(data))]  # truncated
        if choice == 2 and data:
            flipped = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            return bytes(flipped)
        if choice == 3:
            return data + rng.randbytes(rng.randrange(1, 20))  # trailing garbage
        return data


def _call(channel: grpc.Channel, method: Any, request: bytes) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream: Any = channel.unary_stream(path, None, None)(request, timeout=2)
            for _ in zip(range(50), stream, strict=False):
                pass
            stream.cancel()
        else:
            unary: Any = channel.unary_unary(path, None, None)
            unary(request, timeout=2)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_random_and_broken_requests_never_crash_or_hide_an_error(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(PIPELINE)
    run = daemon.wait(daemon.submit(repo.path).id)
    seed = int(os.environ.get("CONVEYOR_FUZZ_SEED", random.randrange(1 << 32)))
    print(f"fuzz seed {seed} (CONVEYOR_FUZZ_SEED={seed} replays it)")
    templates: dict[str, dict[str, Any]] = {
        "SubmitRunRequest": {"repository": str(repo.path), "ref": "main"},
        "GetRunRequest": {"run_id": run.id},
        "WatchRunRequest": {"run_id": run.id},
        "CancelRunRequest": {"run_id": run.id},
        "StreamLogsRequest": {"run_id": run.id, "stage": "s"},
        "ListRunsRequest": {"pipeline": "fuzz", "page_size": 1},
        "ValidatePipelineRequest": {"content": PIPELINE},
    }
    known = [str(repo.path), run.id, run.commit, "fuzz", PIPELINE]
    fuzzer = Fuzzer(random.Random(seed), known, templates)
    assert daemon.channel is not None
    channel = daemon.channel
    methods = list(SERVICE.methods)
    seen: dict[str, set[str]] = {m.name: set() for m in methods}
    bad: list[str] = []
    calls = 0
    deadline = time.monotonic() + BUDGET
    while time.monotonic() < deadline:
        method = methods[calls % len(methods)]
        request = fuzzer.request(method.input_type)
        code = _call(channel, method, request)
        seen[method.name].add(code.name)
        if code in BAD_CODES:
            bad.append(f"{method.name}({request[:200]!r}) -> {code.name}")
        calls += 1
    print(f"{calls} calls: " + "; ".join(f"{m} {sorted(c)}" for m, c in seen.items()))
    assert not bad, f"seed {seed}: " + "\n".join(bad[:20])
    assert all(seen.values()), "every RPC was tried"
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    after = daemon.wait(daemon.submit(repo.path).id)
    assert after.status == runs_pb2.RUN_STATUS_SUCCEEDED
