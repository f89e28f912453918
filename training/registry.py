"""Temporary: moved to core.registry while the training steps land; removed in the same change."""

from core.registry import *  # noqa: F403
