"""Server-rendered pages: the OAuth login and consent pages (no JavaScript, no external assets)."""
