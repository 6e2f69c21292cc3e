"""Kept only for `server/app.py`'s import of `TLSFiles`, which now lives in `anvyl.listeners`.

When merging: change that import in server/app.py to `from anvyl.listeners import TLSFiles` and
delete this module.
"""

from anvyl.listeners import TLSFiles

__all__ = ["TLSFiles"]
