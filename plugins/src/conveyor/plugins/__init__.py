"""Conveyor built-in stage plugins."""
