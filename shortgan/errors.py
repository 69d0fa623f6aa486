"""The one exception type for mistakes a user can fix; the CLI prints its message without a traceback."""


class UserError(Exception):
    """A problem with the user's data, paths, checkpoints or config, with a message that says what to do."""
