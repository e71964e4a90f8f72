"""Implicit feedback: search events from the front end (UBI-like) and judgments derived from them."""
