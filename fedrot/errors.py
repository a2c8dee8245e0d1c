"""The one fedrot exception: a payload that cannot be decoded."""

from __future__ import annotations

__all__ = ["PayloadError"]


class PayloadError(ValueError):
    """A payload is truncated, corrupt, oversized, of an unknown version or mismatched.

    Raised by every ``decode``/``aggregate`` before anything of the declared size is
    allocated; the message says what was wrong.
    """
