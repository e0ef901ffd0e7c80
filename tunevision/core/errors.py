"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class TunevisionError(Exception):
    """A problem with the user's input that they can fix; the message says how."""
