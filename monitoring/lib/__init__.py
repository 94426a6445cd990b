"""Health-check engine without Django: the SSRF guard and guarded HTTP client (`ssrf`), response
assertions (`assertions`), the concurrent runner (`engine`) and test targets (`testing`)."""
