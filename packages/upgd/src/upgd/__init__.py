"""UPGD (Elsayed & Mahmood, ICLR 2024), the student project's variants, and the original learners."""

__version__ = "0.1.0"
