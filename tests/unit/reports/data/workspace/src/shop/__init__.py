"""A tiny sample package: the source the finding fixtures were generated from."""
