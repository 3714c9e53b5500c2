"""A pickle written straight into its temporary file, then renamed over the target.

The same bytes and the same guarantees as ``forgetting_common.atomic.atomic_pickle_dump`` (a
temporary file beside the target, the permissions of a new file, fsync, rename; an error names
the target), without the whole pickle in memory first: the statistics pickle of a 200-epoch
MNIST run is 240 MB, written after every epoch. (Local to this package; a candidate for
``forgetting_common.atomic``.)
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from forgetting_common.atomic import current_umask


def atomic_pickle_stream(obj: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:  # report the file the user asked for, not our temporary name
        raise OSError(err.errno, err.strerror, str(target)) from err
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            # pickle.dump writes the frames pickle.dumps would return, as they are completed
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None or err.filename == tmp:  # name the file the user asked for
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
