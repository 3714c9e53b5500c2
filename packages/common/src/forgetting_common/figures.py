"""Saving matplotlib figures the way every other output is saved: atomically, then closed."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from forgetting_common.atomic import atomic_write_bytes


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120, **savefig_kwargs: Any) -> Path:
    """Render ``fig`` in memory, write it to ``path`` with a rename, and close the figure.

    The format follows the file's suffix (png, pdf, svg …). A figure is never half-written,
    and closing it keeps long sweeps from piling up open figures.
    """
    import matplotlib.pyplot as plt

    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=fmt, dpi=dpi, **savefig_kwargs)
    finally:
        plt.close(fig)
    return atomic_write_bytes(target, buffer.getvalue())
