"""Framework adapters: cachekit.integrations.flask, .starlette, .django (each needs its extra)."""
