"""upgd."""
