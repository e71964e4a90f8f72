"""The HTTP API: app wiring (`app.py`), search and admin blueprints, API-key auth and the WSGI server."""
