"""Artifacts: immutable build outputs identified by their content digest,
with their version, their provenance (signed by the daemon) and the cache
that lets a re-run reuse them instead of building again."""
