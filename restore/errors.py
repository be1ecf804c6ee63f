"""The user-facing error type (no heavy imports, so the command line can catch it without loading torch)."""


class RestoreError(Exception):
    """A user-facing error: one sentence naming the problem and the fix."""
