"""The one exception type for user mistakes: the CLI prints it as a single `error:` line, exit 2."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, bad credentials). Never a bug."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names the key."""
