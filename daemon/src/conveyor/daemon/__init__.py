"""Conveyor daemon `conveyord`."""

import os as _os

# Stage processes that switch to the stage user are started with fork()
# (setuid needs it; vfork cannot do it). gRPC's own fork handlers, run in
# such a child while other threads are inside gRPC, crash it (SIGSEGV,
# SIGABRT): the daemon never needs them, so they are off before gRPC loads.
_os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
