"""The HTTP producer and query API (FastAPI). Imports the core package, never the reverse."""
