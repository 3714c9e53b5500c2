"""targeted_forgetting."""
