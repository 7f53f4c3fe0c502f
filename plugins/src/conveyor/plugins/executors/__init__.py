"""Container executors: ``docker`` (a container on the local engine per
stage process) and ``swarm`` (a Swarm ``replicated-job`` service)."""
