"""The train settings both Flower sides go through: written once, read back."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord

from fedrot.constants import KEY_ERROR_FEEDBACK, KEY_RUN_SEED, KEY_UPDATE
from fedrot.settings import TrainSettings

_SETTINGS = TrainSettings(
    codec="eden",
    codec_params='{"bits": 2}',
    run_seed=42,
    server_round=3,
    update="delta",
    error_feedback=True,
    compress_mask="0f",
)


def test_read_returns_what_write_wrote_and_write_copies() -> None:
    config = ConfigRecord({"lr": 0.1})
    written = _SETTINGS.write(config)
    assert dict(config.items()) == {"lr": 0.1}
    assert written["lr"] == 0.1 and written[KEY_RUN_SEED] == 42
    assert TrainSettings.read(written) == _SETTINGS


def test_error_feedback_is_optional_on_read() -> None:
    config = _SETTINGS.write(ConfigRecord())
    del config[KEY_ERROR_FEEDBACK]
    assert TrainSettings.read(config).error_feedback is False


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (KEY_RUN_SEED, None, r"lacks \['fedrot.run-seed'\]"),
        (KEY_RUN_SEED, "42", "'fedrot.run-seed' must be an int. Found '42'"),
        (KEY_UPDATE, "weights", "error feedback needs delta updates"),
        (KEY_UPDATE, "sum", "must be 'delta' or 'weights'. Found 'sum'"),
    ],
)
def test_read_names_the_bad_entry(key: str, value: object, match: str) -> None:
    config = _SETTINGS.write(ConfigRecord())
    if value is None:
        del config[key]
    else:
        config[key] = value
    with pytest.raises(ValueError, match=match):
        TrainSettings.read(config)
