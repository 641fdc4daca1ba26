"""The one exception type that means "the user asked for something wrong".

The CLI turns a :class:`UserError` into one line on stderr and exit status 2, with no traceback. Anything
else is a bug in modsearch and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a bad path, plan, config, bank or data file.

    The message is one line that names what is wrong and, where it can, what to do.
    """
