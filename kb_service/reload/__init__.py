"""Reloads: gated rebuilds from the review database on a schedule or on demand, with history and rollback."""
