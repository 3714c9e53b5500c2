"""lure."""
