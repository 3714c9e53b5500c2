"""example_forgetting."""
