"""``@cached``: decided once at decoration (decorate.py), then one wrapper per call shape."""
