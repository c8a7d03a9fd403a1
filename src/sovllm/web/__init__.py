"""The chat page (`/`) and the admin console (`/admin`): static files served by the API.

Plain HTML, CSS and JavaScript modules, no build step. See docs/web.md.
"""
