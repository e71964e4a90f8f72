"""kb-service: HTTP API, CLI, engines and KB loading around query understanding and scoring."""

__version__ = "0.1.0"
