"""Executors run a stage's processes: ``local`` (the default) and plugins."""

from conveyor.daemon.executors.base import Executor, ExecutorError, ProcessRequest

__all__ = ["Executor", "ExecutorError", "ProcessRequest"]
