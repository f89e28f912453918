"""Reference servers for the comparison benchmark (not part of servewatch)."""
