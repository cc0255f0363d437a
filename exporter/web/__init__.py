"""The aiohttp app that faces clients, and the web config (TLS, basic auth, headers)."""
