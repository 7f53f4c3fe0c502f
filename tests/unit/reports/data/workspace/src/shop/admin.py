"""Admin console: eval of user input, a hard-coded password and MD5 (bandit B307, B105, B324)."""

import hashlib

password = "hunter2"


def run_console() -> object:
    return eval(input())


def check(candidate: str) -> bool:
    return hashlib.md5(candidate.encode()).hexdigest() == hashlib.md5(password.encode()).hexdigest()
