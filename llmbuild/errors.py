"""The errors a build can end with, each tied to the exit code documented in the README.

Code raises these with a one-line message naming the key or file at fault; the CLI prints the
message and exits with the code, never a traceback. Anything else is a bug (exit 1).
"""


class BuildError(Exception):
    """Base class: an expected failure with a one-line message and an exit code."""

    exit_code = 1


class InvalidInput(BuildError):
    """Invalid recipe, override or input file (exit 2). Raise at plan time where it can be known."""

    exit_code = 2


class LicenseViolation(BuildError):
    """The license policy is violated (exit 3): raised before fine-tuning or export."""

    exit_code = 3


class GateFailed(BuildError):
    """A verification or quality gate failed (exit 4): raised after the reports are written."""

    exit_code = 4


EXIT_OK = 0
EXIT_BUG = 1
