"""Running the external programs the anchors use (x265, libde265-dec265, VTM, VVenC, VVdeC).

Both sides run one: the encoder an inner video encoder (and, in the loop, the
decoder), the decoder an inner video decoder. Every failure becomes one
ExternalToolError line naming the program and quoting what it said, never a
traceback; the caller keeps its files in a tempfile.TemporaryDirectory so
nothing is left behind, whatever happens.
"""

import shutil
import subprocess

from common.errors import ExternalToolError

TOOL_TIMEOUT_S = 600      # one picture; a program that takes longer is treated as hung

# How to get each program, for the "not found" message.
INSTALL_HINTS = {
    "x265": "install it with `apt-get install x265` (or `make system-tools`)",
    "libde265-dec265": "install it with `apt-get install libde265-examples` (or `make system-tools`)",
    "EncoderAppStatic": "build VTM (https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM) and put its bin/ on PATH",
    "DecoderAppStatic": "build VTM (https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM) and put its bin/ on PATH",
    "vvencFFapp": "build VVenC (https://github.com/fraunhoferhhi/vvenc) and put its bin/ on PATH",
    "vvdecapp": "build VVdeC (https://github.com/fraunhoferhhi/vvdec) and put its bin/ on PATH",
}


def find_tool(name):
    """Absolute path of a program on PATH, or ExternalToolError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, "put it on PATH")
        raise ExternalToolError(f"{name} not found on PATH: {hint}")
    return path


def tool_message(output):
    """The line of a program's output that says what went wrong: its first line mentioning
    an error, else its last non-empty line."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no message)"])[0 if errors else -1]


def run_tool(argv, cwd=None):
    """Run argv (argv[0] looked up on PATH); returns the CompletedProcess (bytes output).
    A missing program, a non-zero exit, a crash or a hang is an ExternalToolError."""
    name = argv[0]
    command = [find_tool(name)] + [str(a) for a in argv[1:]]
    try:
        done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"{name} did not finish within {TOOL_TIMEOUT_S} s") from None
    except OSError as exc:
        raise ExternalToolError(f"cannot run {name}: {exc.strerror}") from None
    if done.returncode != 0:
        how = (f"killed by signal {-done.returncode}" if done.returncode < 0
               else f"exit code {done.returncode}")
        raise ExternalToolError(f"{name} failed ({how}): {tool_message(done.stderr + done.stdout)}")
    return done
