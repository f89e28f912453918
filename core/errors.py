"""The root of servewatch's errors, and the registry's own."""


class ServewatchError(Exception):
    """A problem worded for the user (bad data, config, request or registry state); commands
    print it as one line, never a traceback."""


class RegistryError(ServewatchError):
    """The registry cannot do what was asked: no such model, version or alias, or a version that
    fails its checks."""


def first_line(exc: BaseException, limit: int | None = 200, *, named: bool = False) -> str:
    """The first line of an exception's message (stripped, at most `limit` characters): how a
    log line, a health detail or an error body quotes an exception. Without a message, "" (or
    the exception's class name when `named`)."""
    lines = str(exc).strip().splitlines()
    if lines:
        return lines[0][:limit]
    return type(exc).__name__ if named else ""
