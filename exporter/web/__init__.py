"""The aiohttp app that faces clients, the status page and the web config (TLS, basic auth,
headers)."""
