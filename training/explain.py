"""Temporary: moved to core.explain while the training steps land; removed in the same change."""

from core.explain import *  # noqa: F403
