from greeter import greet


def test_greets_by_name() -> None:
    assert greet("Ada") == "Hello, Ada!"


def test_defaults_to_world() -> None:
    assert greet("  ") == "Hello, world!"
