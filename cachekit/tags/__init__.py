"""Tags: invalidating every entry written with a tag at once."""
