"""The exceptions every entry point maps to an exit status (pipeline.core.cli.run_task): a user mistake prints one
`error:` line and exits 2; a stop that saved a checkpoint prints `stopped:` and exits EXIT_STOPPED."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, bad credentials). Never a bug."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names the key."""


EXIT_STOPPED = 75  # EX_TEMPFAIL: not finished, not failed; re-running the same command resumes


class Stopped(Exception):
    """Training stopped early on purpose (signal or time budget) after saving a checkpoint."""
