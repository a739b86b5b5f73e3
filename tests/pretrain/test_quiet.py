"""Lightning is quieted inside a block only: levels, filters and warning filters come back after."""

from __future__ import annotations

import logging
import warnings

import pytest

from medcl.pretrain.quiet import LIGHTNING_LOGGERS, quiet_lightning


def test_quiet_lightning_hides_noise_inside_the_block_and_restores_everything(
        caplog: pytest.LogCaptureFixture) -> None:
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import)

    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    advertising = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters, warning_filters = list(advertising.filters), list(warnings.filters)
    with quiet_lightning(info=False):
        assert all(logging.getLogger(n).level == logging.ERROR for n in LIGHTNING_LOGGERS)
        assert not advertising.filter(logging.LogRecord("x", logging.INFO, "", 0, "Tip: install litlogger", (), None))
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn_explicit("does not have many workers", UserWarning, "x.py", 1, module="lightning.x")
            warnings.warn("a warning of medcl's own", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["a warning of medcl's own"]
    assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == levels
    assert advertising.filters == filters and warnings.filters == warning_filters


def test_the_default_keeps_lightnings_info_lines() -> None:
    before = logging.getLogger("lightning.pytorch").level
    with quiet_lightning():
        assert logging.getLogger("lightning.pytorch").level == before
