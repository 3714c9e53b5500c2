"""The `forgetting` command: from a paper's claim to its figure, as a sweep of original command lines."""
