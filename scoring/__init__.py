"""Scoring: a parsed query plus config in; a backend-neutral search plan and rescored hits out."""
