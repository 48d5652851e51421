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


class ExternalToolError(FcrsError):
    """An external program (an anchor's inner video encoder or decoder) is missing, fails or hangs."""


def exit_code_of(app_name, run):
    """Call run(); an FcrsError or MemoryError becomes one `<app>: error: ...` line on
    stderr and exit code 1 (never a traceback). Returns run()'s exit code otherwise."""
    import sys
    try:
        return run()
    except FcrsError as exc:
        print(f"{app_name}: error: {exc}", file=sys.stderr)
    except MemoryError:
        print(f"{app_name}: error: out of memory", file=sys.stderr)
    return 1
