"""Conveyor's Python client: a thin wrapper over the generated gRPC stubs."""
