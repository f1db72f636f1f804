"""The exception for user mistakes (the CLI prints it as a single `error:` line, exit 2), and Stopped (exit 75).

Stopped lives here, not in pipeline.training.checkpoint, so the CLI's error contract catches it without importing torch
(every command, `info` and `summary` included, runs under it).
"""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, bad credentials). Never a bug."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names the key."""


EXIT_STOPPED = 75  # EX_TEMPFAIL: not finished, not failed; re-running the same command resumes


class Stopped(Exception):
    """Training stopped early on purpose (signal or time budget) after saving a checkpoint."""
