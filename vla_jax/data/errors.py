"""The one exception type of the data pipeline."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data or data configuration. The message is one line naming the dataset and field."""

    def __init__(self, message: str):
        # Keep it one line, whatever the caller formatted.
        super().__init__(" ".join(str(message).split()))
