"""Stampede protection: pure rules, one async source, its generated sync twin."""
