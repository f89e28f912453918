"""The root of servewatch's errors, and the registry's own."""


class ServewatchError(Exception):
    """A problem worded for the user (bad data, config, request or registry state); commands
    print it as one line, never a traceback."""


class RegistryError(ServewatchError):
    """The registry cannot do what was asked: no such model, version or alias, or a version that
    fails its checks."""
