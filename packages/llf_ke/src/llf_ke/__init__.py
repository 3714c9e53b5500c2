"""llf_ke."""
