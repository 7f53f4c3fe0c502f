"""Continuous delivery: environments, deploy targets, deployments, rollouts."""
