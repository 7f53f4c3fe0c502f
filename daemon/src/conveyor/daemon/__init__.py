"""Conveyor daemon `conveyord`."""
