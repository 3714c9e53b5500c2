"""Entry point of the `forgetting` console script (filled in by issue 14)."""


def main() -> None:
    raise SystemExit("forgetting: not built yet")
