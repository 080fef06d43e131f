"""Settings: environment variables, the optional config file, and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import Settings
from ivr.errors import ConfigError
from ivr.llm.realtime_wire import realtime_url

FILE = """
server: {port: 9090, default_flow: concierge}
llm: {base_url: "http://127.0.0.1:9/v1", model: gpt-test, api_key_env: MY_KEY, timeout_s: 7}
tts: {base_url: "http://127.0.0.1:9/v1", voice: nova}
"""


def test_config_file_gives_defaults_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text(FILE)
    s = Settings.from_env({"IVR_CONFIG": str(path), "MY_KEY": "sk-secret-123456789",
                           "IVR_PORT": "8081"})
    assert s.port == 8081  # environment over file
    assert s.default_flow == "concierge"
    assert s.llm is not None and s.llm.model == "gpt-test" and s.llm.timeout_read_s == 7
    assert s.llm.api_key == "sk-secret-123456789"
    assert "sk-secret" not in repr(s) and "sk-secret" not in repr(s.llm)
    assert s.tts is not None and s.tts.voice == "nova"
    assert s.stt is None  # not configured: the embedded recognizer


@pytest.mark.parametrize("text, message", [
    ("server: {prot: 1}", "server.prot is not a setting"),
    ("llm: {base: x}", "llm.base is not a provider setting"),
    ("db: {x: 1}", "unknown section `db`"),
    ("- a list", "expected a mapping"),
])
def test_config_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"IVR_CONFIG": str(path)})


def test_bad_environment_values_are_clear() -> None:
    with pytest.raises(ConfigError, match="IVR_PORT='x' is not an integer"):
        Settings.from_env({"IVR_PORT": "x"})
    with pytest.raises(ConfigError, match="IVR_LLM_BASE_URL must be an http"):
        Settings.from_env({"IVR_LLM_BASE_URL": "ftp://x"})


def test_stt_api_takes_realtime_and_names_the_choices() -> None:
    """IVR_STT_API: transcriptions by default; realtime (streaming) is one of the choices."""
    assert Settings.from_env({}).stt_api == "transcriptions"
    assert Settings.from_env({"IVR_STT_API": "realtime"}).stt_api == "realtime"
    with pytest.raises(ConfigError, match="IVR_STT_API='stream' must be one of "
                                          "transcriptions, chat, realtime"):
        Settings.from_env({"IVR_STT_API": "stream"})


def test_realtime_url_is_the_setting_else_derived_from_the_base_url() -> None:
    """IVR_REALTIME_URL when set; else the provider's base URL as a WebSocket URL."""
    assert realtime_url("wss://rt.example/v1/realtime", "https://x/v1") == (
        "wss://rt.example/v1/realtime")
    assert realtime_url(None, "https://api.openai.com/v1/") == (
        "wss://api.openai.com/v1/realtime")
    assert realtime_url(None, "http://127.0.0.1:8000/v1") == "ws://127.0.0.1:8000/v1/realtime"


def test_llm_budget_per_call_defaults_and_bounds() -> None:
    """IVR_LLM_MAX_TOKENS_PER_CALL: 20,000 by default, 0 for no limit, never negative."""
    assert Settings.from_env({}).llm_max_tokens_per_call == 20_000
    assert Settings.from_env({"IVR_LLM_MAX_TOKENS_PER_CALL": "0"}).llm_max_tokens_per_call == 0
    with pytest.raises(ConfigError, match="IVR_LLM_MAX_TOKENS_PER_CALL=-1 must be 0"):
        Settings.from_env({"IVR_LLM_MAX_TOKENS_PER_CALL": "-1"})
    with pytest.raises(ConfigError, match="is not an integer"):
        Settings.from_env({"IVR_LLM_MAX_TOKENS_PER_CALL": "lots"})


def test_recognizer_bounds_default_and_refuse_zero() -> None:
    """The wait for a recognizer worker and the hold of one are bounded by default."""
    s = Settings.from_env({})
    assert (s.recognizer_wait_ms, s.recognizer_hold_ms) == (5000, 70000)
    assert Settings.from_env({"IVR_RECOGNIZER_WAIT_MS": "250"}).recognizer_wait_ms == 250
    with pytest.raises(ConfigError, match="IVR_RECOGNIZER_HOLD_MS=0 must be at least 1 ms"):
        Settings.from_env({"IVR_RECOGNIZER_HOLD_MS": "0"})
    assert s.recognizer_slots == 8
    assert Settings.from_env({"IVR_RECOGNIZER_SLOTS": "1"}).recognizer_slots == 1
    with pytest.raises(ConfigError, match="IVR_RECOGNIZER_SLOTS=0 must be within"):
        Settings.from_env({"IVR_RECOGNIZER_SLOTS": "0"})


def test_barge_in_is_vad_by_default_words_on_request_nothing_else() -> None:
    assert Settings.from_env({}).barge_in == "vad"
    assert Settings.from_env({"IVR_BARGE_IN": "words"}).barge_in == "words"
    with pytest.raises(ConfigError, match="IVR_BARGE_IN='word' must be vad or words"):
        Settings.from_env({"IVR_BARGE_IN": "word"})


def test_processes_default_to_one_and_need_a_fixed_port() -> None:
    assert Settings.from_env({}).processes == 1
    assert Settings.from_env({"IVR_PROCESSES": "4"}).processes == 4
    for env, message in (({"IVR_PROCESSES": "0"}, "IVR_PROCESSES=0"),
                         ({"IVR_PROCESSES": "65"}, "IVR_PROCESSES=65"),
                         ({"IVR_PROCESSES": "2", "IVR_PORT": "0"}, "fixed IVR_PORT")):
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)


def test_recognizer_workers_are_shared_out_over_the_processes() -> None:
    from ivr.server.supervisor import workers_per_process

    assert [workers_per_process(n, cores=8) for n in (1, 2, 3, 8, 16)] == [4, 4, 2, 1, 1]
    assert workers_per_process(2, cores=2) == 1


def test_provider_rate_limits_default_off_and_read_per_role(tmp_path: Path) -> None:
    """IVR_{ROLE}_RPM / _TPM default to 0 (no limit), IVR_{ROLE}_QUEUE_MS to 1000; each is
    read for its own role, from the environment or the config file."""
    base = {"IVR_LLM_BASE_URL": "http://llm", "IVR_STT_BASE_URL": "http://stt"}
    s = Settings.from_env(base)
    assert s.llm is not None and (s.llm.rpm, s.llm.tpm, s.llm.queue_ms) == (0, 0, 1000)
    s = Settings.from_env({**base, "IVR_LLM_RPM": "500", "IVR_LLM_TPM": "200000",
                           "IVR_LLM_QUEUE_MS": "250", "IVR_STT_RPM": "0"})
    assert s.llm is not None and (s.llm.rpm, s.llm.tpm, s.llm.queue_ms) == (500, 200_000, 250)
    assert s.stt is not None and s.stt.rpm == 0
    path = tmp_path / "ivr.yaml"
    path.write_text("stt: {base_url: http://stt, rpm: 50, tpm: 900, queue_ms: 300}\n")
    s = Settings.from_env({"IVR_CONFIG": str(path)})
    assert s.stt is not None and (s.stt.rpm, s.stt.tpm, s.stt.queue_ms) == (50, 900, 300)


@pytest.mark.parametrize("var, raw, message", [
    ("IVR_LLM_RPM", "-5", "IVR_LLM_RPM must be 0 .no limit. or a positive number"),
    ("IVR_LLM_TPM", "many", "IVR_LLM_TPM must be a whole number"),
    ("IVR_LLM_QUEUE_MS", "0", "IVR_LLM_QUEUE_MS must be positive"),
])
def test_bad_provider_rate_limits_are_clear(var: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"IVR_LLM_BASE_URL": "http://llm", var: raw})
