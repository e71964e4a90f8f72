"""Ingest: knowledge files and review rows → validated records → vectors and segmentations → a new version."""
