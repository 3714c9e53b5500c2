"""Entry point of the `forgetting` console script."""

from forgetting.cli import entry


def main() -> None:
    entry()


if __name__ == "__main__":
    main()
