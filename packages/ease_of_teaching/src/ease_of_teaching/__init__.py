"""ease_of_teaching."""
