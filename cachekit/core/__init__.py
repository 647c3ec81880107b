"""The pure core: keys, codec, type-faithful decoding, policy, breaker (no I/O here)."""
