"""Errors raised on bad input.

Every user-facing problem is an :class:`IIFError` (a ``ValueError``) whose message names the problem
and the fix, so the CLI can print it as one line and exit non-zero.
"""


class IIFError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""
