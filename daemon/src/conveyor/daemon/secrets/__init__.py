"""Secrets: values the daemon holds (an encrypted file, its environment),
given by name to the stages that ask for them, and masked everywhere else."""
