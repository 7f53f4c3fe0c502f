"""Deploy targets on a Docker engine: ``docker`` (a container per replica,
rolled by the daemon) and ``swarm`` (a Swarm service that rolls itself)."""
