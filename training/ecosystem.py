"""Temporary: moved to core.ecosystem while the training steps land; removed in the same change."""

from core.ecosystem import *  # noqa: F403
