"""Leases: a load that started before an invalidation never stores."""
