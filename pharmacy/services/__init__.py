"""Use cases. Each takes a Session first, may flush, and never commits."""
