"""The web UI at /ui: static files only. The page calls the public API with the key the user types."""
