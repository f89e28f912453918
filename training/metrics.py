"""Temporary: moved to core.metrics while the training steps land; removed in the same change."""

from core.metrics import *  # noqa: F403
