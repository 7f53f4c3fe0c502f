"""The engine's progress stream as the stage log shows it: builder output as
is, one line per layer and status, errors from inside the stream, and the
builder's running container."""

from __future__ import annotations

from types import TracebackType

from conveyor.plugins.docker.progress import ProgressLog


class Collected:
    """An ``OutputWriter`` keeping what it is given."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)

    def close(self) -> None:
        pass

    def __enter__(self) -> Collected:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


def test_builder_output_goes_to_the_log_and_the_container_is_followed() -> None:
    out = Collected()
    progress = ProgressLog(out)
    progress.feed({"stream": "Step 2/2 : RUN make"})
    progress.feed({"stream": "\n"})
    progress.feed({"stream": " ---> Running in 9ef1b3c3d957\n"})
    assert progress.container == "9ef1b3c3d957"
    progress.feed({"stream": "Removing intermediate container 9ef1b3c3d957\n"})
    assert progress.container == ""
    progress.feed({"aux": {"ID": "sha256:" + "a" * 64}})
    progress.feed({"stream": "Successfully built aaaaaaaaaaaa\n"})
    assert out.data.decode() == (
        "Step 2/2 : RUN make\n ---> Running in 9ef1b3c3d957\n"
        "Removing intermediate container 9ef1b3c3d957\nSuccessfully built aaaaaaaaaaaa\n"
    )
    assert progress.aux_value("ID") == "sha256:" + "a" * 64
    assert progress.error == ""


def test_an_error_inside_the_stream_is_kept_and_logged() -> None:
    out = Collected()
    progress = ProgressLog(out)
    progress.feed(
        {
            "errorDetail": {"code": 3, "message": "The command '/bin/sh -c exit 3' returned 3"},
            "error": "The command '/bin/sh -c exit 3' returned 3",
        }
    )
    assert progress.error == "The command '/bin/sh -c exit 3' returned 3"
    assert out.data.decode() == "The command '/bin/sh -c exit 3' returned 3\n"
    progress.feed({"error": "only the short form\n"})
    assert progress.error == "only the short form"


def test_push_progress_is_one_line_per_layer_and_status() -> None:
    out = Collected()
    progress = ProgressLog(out)
    progress.feed({"status": "The push refers to repository [127.0.0.1:5000/a]"})
    for current in (512, 1024, 2048):
        progress.feed(
            {"status": "Pushing", "id": "1e3c", "progressDetail": {"current": current, "total": 9}}
        )
    progress.feed({"status": "Pushed", "progressDetail": {}, "id": "1e3c"})
    progress.feed({"status": "1.0: digest: sha256:" + "b" * 64 + " size: 942"})
    progress.feed({"progressDetail": {}, "aux": {"Tag": "1.0", "Digest": "sha256:" + "b" * 64}})
    assert out.data.decode().splitlines() == [
        "The push refers to repository [127.0.0.1:5000/a]",
        "1e3c: Pushing",
        "1e3c: Pushed",
        "1.0: digest: sha256:" + "b" * 64 + " size: 942",
    ]
    assert progress.aux_value("Digest") == "sha256:" + "b" * 64
