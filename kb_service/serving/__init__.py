"""Serving: the search path the HTTP API and the CLI share, over the version the engine names current."""
