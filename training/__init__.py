"""Offline half of servewatch: data set + YAML config -> a versioned, self-describing model."""
