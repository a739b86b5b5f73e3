"""Lightning without its noise, for the duration of a block.

Lightning prints an advertising line on every fit, triggers a torch deprecation warning inside its
own pytree helper, and (for a comparison of many short runs) info lines that would drown medcl's
progress lines. :func:`quiet_lightning` hides those inside a ``with`` block only: logger levels,
logger filters and warning filters are as they were afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


class _NoAdvertising(logging.Filter):
    """Drop Lightning's 'Tip: try installing litlogger' line; keep its real information."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


@contextlib.contextmanager
def quiet_lightning(*, info: bool = True) -> Iterator[None]:
    """Inside the block: no advertising line, no pytree deprecation warning, and with ``info=False``
    none of Lightning's info lines or warnings either (errors still show)."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import: change them after)

    advertising = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    drop = _NoAdvertising()
    advertising.addFilter(drop)
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    try:
        with warnings.catch_warnings():
            # Lightning's own pytree helper triggers this torch deprecation on every fit; nothing to act on.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            if not info:
                for name in LIGHTNING_LOGGERS:
                    logging.getLogger(name).setLevel(logging.ERROR)
                warnings.filterwarnings("ignore", module="lightning")
                warnings.filterwarnings("ignore", category=UserWarning, message=".*does not have many workers.*")
            yield
    finally:
        advertising.removeFilter(drop)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
