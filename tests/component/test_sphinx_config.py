"""The phone path's decoder settings: the tuned defaults reach the decoders a worker builds,
and `IVR_SPHINX_CONFIG` overrides them or is refused, naming what is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ivr.speech.sphinx import decoding
from ivr.speech.sphinx.decoding import (
    PHONE_DECODER,
    SPHINX_CONFIG_ENV,
    decoder_overrides,
    make_full_decoder,
    make_lean_decoder,
)
from ivr.speech.sphinx.process import spawn_worker


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(SPHINX_CONFIG_ENV, raising=False)
    decoding._settings.cache_clear()
    yield
    decoding._settings.cache_clear()


def _use(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SPHINX_CONFIG_ENV, value)
    decoding._settings.cache_clear()


def test_overrides_parse() -> None:
    assert decoder_overrides("") == {}
    assert decoder_overrides(" beam = 1e-60 , -wip=0.5,,band_fill=30 ") == {
        "beam": "1e-60", "wip": "0.5", "band_fill": "30"}


@pytest.mark.parametrize(("text", "says"), [
    ("beam", "'beam' is not key=value"),
    ("beam=", "'beam=' is not key=value"),
    ("=1", "'=1' is not key=value"),
    ("wip=1,wip=2", "'wip' given twice"),
    ("band_fill=loud", "band_fill='loud' is not a number"),
])
def test_malformed_overrides_are_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=SPHINX_CONFIG_ENV) as info:
        decoder_overrides(text)
    assert says in str(info.value)


def test_worker_decoders_keep_the_trained_front_end() -> None:
    # A mel filterbank narrowed to the phone band loses half the answers (decoding.py).
    config = make_lean_decoder().config
    assert (config["lowerf"], config["upperf"], config["nfilt"]) == (130.0, 6800.0, 25)
    assert config["remove_noise"] is True
    for key, value in PHONE_DECODER.items():
        assert str(config[key]) == value, key
    assert decoding._settings()[1:] == (decoding.BAND_FILL_LEVEL, decoding.WHITE_LEVEL)


def test_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, "beam=1e-70,band_fill=12,white=3")
    config = make_lean_decoder().config
    assert config["beam"] == pytest.approx(1e-70)
    assert decoding._settings()[1:] == (12.0, 3.0)


def test_front_end_settings_are_not_lost_to_feat_params(monkeypatch: pytest.MonkeyPatch) -> None:
    # The model's feat.params says remove_noise yes, cmn batch; and "no" is a true string.
    _use(monkeypatch, "remove_noise=no,cmn=live")
    for config in (make_lean_decoder().config, make_full_decoder().config):
        assert config["remove_noise"] is False
        assert config["cmn"] == "live"


@pytest.mark.parametrize(("value", "says"), [
    ("bogus=1", "pocketsphinx has no setting 'bogus'"),
    ("beam=wide", "beam='wide'"),
    ("remove_noise=maybe", "remove_noise='maybe': not yes or no"),
])
def test_a_bad_setting_stops_the_worker_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    _use(monkeypatch, value)
    with pytest.raises(ValueError, match=SPHINX_CONFIG_ENV) as info:
        asyncio.run(spawn_worker([], log_path=None))
    assert says in str(info.value)
