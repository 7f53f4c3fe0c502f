"""Release notes from git history, as a Conveyor stage kind."""
