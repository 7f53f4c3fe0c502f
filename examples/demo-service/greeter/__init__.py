"""A tiny service used by Conveyor's demo pipeline."""


def greet(name: str) -> str:
    """Return a greeting for ``name``."""
    name = name.strip() or "world"
    return f"Hello, {name}!"
