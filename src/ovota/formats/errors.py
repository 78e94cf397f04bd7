"""The one exception type the format parsers raise."""


class FormatError(ValueError):
    """Input bytes or text that do not form a valid record; the message is one line for the user."""
