"""The errors bad input raises: one unusable item, or a root that is not the publisher's layout.

Decoders raise `BadInput` and readers turn it into a quarantine row whose reason is the
message; source readers and benchmark readers raise `LayoutError`. Both live below all of them.
"""

from __future__ import annotations


class BadInput(ValueError):
    """One input item is unusable; the message is the quarantine reason."""


class LayoutError(ValueError):
    """A source or benchmark root that does not exist or does not look like its publisher's
    layout."""
