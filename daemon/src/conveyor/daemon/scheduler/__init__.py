"""Queue, concurrency groups and the DAG execution of runs."""

from conveyor.daemon.scheduler.journal import Journal
from conveyor.daemon.scheduler.queue import Scheduler

__all__ = ["Journal", "Scheduler"]
