"""The error every layer raises for a bad config value (one line naming the field and the fix)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad config value; `str()` is one line naming the field and the fix."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field, self.message = field_name, message

    def __reduce__(self):  # a submitit job hands its exception back pickled
        return type(self), (self.field, self.message)
