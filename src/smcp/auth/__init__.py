"""Who is calling: API keys, the admin token; OAuth arrives here too."""
