"""Error types. Every failure the apps report to a user is one of these: the
app prints its message on one line and exits non-zero, never a traceback."""


class FcrsError(Exception):
    """Base class of all errors reported to the user."""


class BitstreamError(FcrsError):
    """The stream is malformed, truncated, or violates a constraint of the spec."""


class InputError(FcrsError):
    """An input file or array is unusable (shape, dtype, NaN/Inf, missing file)."""


class ConfigError(FcrsError):
    """A configuration file or command-line option is invalid."""
