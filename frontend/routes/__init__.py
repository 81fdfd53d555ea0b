"""Thin FastAPI routers: each parses, calls one serving function, returns."""
