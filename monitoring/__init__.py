"""Watching served models: drift and performance over the prediction log, estimates and alerts."""
