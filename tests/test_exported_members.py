"""The public surface is exactly what `streamq.__all__` lists."""

from __future__ import annotations

import streamq


def test_all_is_sorted_and_complete() -> None:
    """Every public name in the package namespace is exported, and `__all__` is sorted."""
    public = {
        name
        for name, value in vars(streamq).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("streamq")
    }
    assert public <= set(streamq.__all__)
    assert streamq.__all__ == sorted(streamq.__all__)
    for name in streamq.__all__:
        assert hasattr(streamq, name), name
