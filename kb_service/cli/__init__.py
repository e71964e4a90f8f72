"""The `kb` command."""
