"""The one exception type for user mistakes.

Entry points (CLI commands, KFP components) turn a ``GanforgeError`` into a one-line message and a
non-zero exit; anything else is a programmer error and keeps its traceback.
"""


class GanforgeError(Exception):
    """A problem the user can fix: the message names the problem and the fix, on one line."""


class TransientError(GanforgeError):
    """A failure that running the same thing again may cure (an unreachable server, an interrupted run).

    A pipeline step retries these (``set_retry``); any other ``GanforgeError`` is the user's to fix and
    ends the step for good (``ganforge.pipeline.steps.user_errors``).
    """
