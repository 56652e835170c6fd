"""The one exception type for bad input: the command prints its message on one line, exit 2."""


class InputError(ValueError):
    """Bad user input (config, data, or a run that cannot go on). ``key`` names what is wrong."""

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)
