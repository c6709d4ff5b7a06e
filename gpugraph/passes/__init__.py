"""Graph passes. Each is a pure named function; pipeline.py lists them in order."""
