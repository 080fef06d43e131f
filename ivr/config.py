"""One settings object for the server, read from the environment (`IVR_*`).

CLI flags of `ivr serve` override the environment; every field is listed in the README.
Remote providers are configured per role (`IVR_{STT,TTS,LLM}_*`): a role without a base
URL has no remote provider, so the embedded engines (pocketsphinx, espeak-ng) stay the
default and a plain install needs no network and no keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError
from ivr.provider_config import ROLE_KEYS

# Re-exported (`X as X`): the per-role provider settings live in their own module.
from ivr.provider_config import ProviderConfig as ProviderConfig
from ivr.provider_config import ProviderRole as ProviderRole
from ivr.provider_config import provider_from_env as provider_from_env

_ENV: dict[str, str] = {
    "host": "IVR_HOST",
    "port": "IVR_PORT",
    "db": "IVR_DB",
    "flows": "IVR_FLOWS",
    "default_flow": "IVR_DEFAULT_FLOW",
    "public_url": "IVR_PUBLIC_URL",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "routes": "IVR_ROUTES",
    "recognizer_workers": "IVR_RECOGNIZER_WORKERS",
    "processes": "IVR_PROCESSES",
    "voice": "IVR_VOICE",
    "voice_rate": "IVR_VOICE_RATE",
    "lead_ms": "IVR_PLAYER_LEAD_MS",
    "filler_after_ms": "IVR_FILLER_AFTER_MS",
    "mark_grace_ms": "IVR_MARK_GRACE_MS",
    "recognition_timeout_ms": "IVR_RECOGNITION_TIMEOUT_MS",
    "endpoint_complete_ms": "IVR_ENDPOINT_COMPLETE_MS",
    "barge_in": "IVR_BARGE_IN",
    "recognizer_wait_ms": "IVR_RECOGNIZER_WAIT_MS",
    "recognizer_hold_ms": "IVR_RECOGNIZER_HOLD_MS",
    "recognizer_slots": "IVR_RECOGNIZER_SLOTS",
    # Personal data (docs/security.md)
    "redact_digits": "IVR_REDACT_DIGITS",
    "retention_days": "IVR_RETENTION_DAYS",
    "demo_seed": "IVR_DEMO_SEED",
    "log_level": "IVR_LOG_LEVEL",
    "api_token": "IVR_API_TOKEN",
    "metrics_token": "IVR_METRICS_TOKEN",
    "insecure": "IVR_INSECURE",
    "trust_proxy": "IVR_TRUST_PROXY",
    "cache_dir": "IVR_CACHE_DIR",
    "cache_mb": "IVR_CACHE_MB",
    "tools_file": "IVR_TOOLS_FILE",
    "stt_api": "IVR_STT_API",
    "llm_max_tokens_per_call": "IVR_LLM_MAX_TOKENS_PER_CALL",
    "llm_mode": "IVR_LLM_MODE",
    "llm_voice": "IVR_LLM_VOICE",
    "realtime_url": "IVR_REALTIME_URL",
    "realtime_model": "IVR_REALTIME_MODEL",
    "webhook_hosts": "IVR_WEBHOOK_HOSTS",
    "webhook_secret": "IVR_WEBHOOK_SECRET",
    "stream_secret": "IVR_STREAM_SECRET",
    "stream_token_ttl_s": "IVR_STREAM_TOKEN_TTL_S",
    "media_max_message_bytes": "IVR_MEDIA_MAX_MESSAGE_BYTES",
    "media_flood_ms": "IVR_MEDIA_FLOOD_MS",
    "media_start_timeout_ms": "IVR_MEDIA_START_TIMEOUT_MS",
    "media_idle_timeout_ms": "IVR_MEDIA_IDLE_TIMEOUT_MS",
    "max_calls": "IVR_MAX_CALLS",
    "max_loop_lag_ms": "IVR_MAX_LOOP_LAG_MS",
    "busy": "IVR_BUSY",
    "busy_message": "IVR_BUSY_MESSAGE",
    # Outcomes that tell the truth; the database never blocks a call.
    "error_prompt": "IVR_ERROR_PROMPT",
    "instance_id": "IVR_INSTANCE_ID",
    "heartbeat_ms": "IVR_HEARTBEAT_MS",
    "memory_trim_s": "IVR_MEMORY_TRIM_S",
    "stale_after_ms": "IVR_STALE_AFTER_MS",
    "db_queue_max": "IVR_DB_QUEUE_MAX",
    "tts_first_audio_ms": "IVR_TTS_FIRST_AUDIO_MS",
    "drain_s": "IVR_DRAIN_S",
    "event_loop": "IVR_EVENT_LOOP",
}

# Settings where 0 switches something off: what 0 means, and what other values count.
_ZERO_MEANS: dict[str, tuple[str, str]] = {
    "llm_max_tokens_per_call": ("no limit", "tokens"),
    "retention_days": ("keep", "days"),
    "drain_s": ("end calls at once", "seconds"),
    "memory_trim_s": ("off", "seconds"),
    "max_calls": ("no cap", "calls"),
    "max_loop_lag_ms": ("off", "ms"),
    "endpoint_complete_ms": ("off", "ms"),
}

BUSY_MODES = ("message", "reject")
# How an `llm` step talks (a flow's `engines.llm_mode` wins): recognizer → text model →
# synthesizer; GPT-4o audio in and out through /chat/completions; or a Realtime session.
LLM_MODES = ("pipeline", "audio", "realtime")
BARGE_IN_MODES = ("vad", "words")
STT_APIS = ("transcriptions", "chat", "realtime")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# Server processes one supervisor runs (IVR_PROCESSES): past a few per core they only
# compete for it; this bound catches a typo (80 for 8), not a policy.
MAX_PROCESSES = 64


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2)))


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # A SQLite file (Path) or a PostgreSQL URL (str): see `database_url`.
    db: Path | str = Path("ivr.db")
    flows: Path = Path("flows")
    default_flow: str = "main_menu"
    # The URL Twilio uses to reach us (e.g. https://ivr.example.com). Signatures are computed
    # over it, not over what a reverse proxy shows us; empty means "derive from the request".
    public_url: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    twilio_account_sid: str = ""
    # YAML mapping called numbers to flows; default: routes.yaml in the flows directory.
    routes: Path | None = None
    recognizer_workers: int = field(default_factory=_default_workers)
    # Server processes on one port (`server.supervisor`): 1 is this process alone; more
    # run under a supervisor that shares the port (SO_REUSEPORT), the stream secret and
    # the cores (each process's recognizer pool: cores // processes, unless given).
    processes: int = 1
    voice: str = "en-us"
    voice_rate: int = 170
    lead_ms: int = 160
    # After this long without an answer from a tool or an engine, the caller hears a
    # filler ("One moment, please."), and again each time it passes.
    filler_after_ms: int = 1500
    # How long past its expected end we wait for a prompt's mark before giving up on it:
    # Twilio echoes marks within a few hundred ms, a lost echo must not stall the call.
    mark_grace_ms: int = 3000
    # A recognizer that takes longer than this (to start, or to finish after end of
    # speech) is given up on: the answer is a no-match, not a stuck call.
    recognition_timeout_ms: int = 10000
    # Grammar-aware endpointing: when the recognizer's partial hypothesis is already a
    # whole answer for the step's grammar, this much silence ends the caller's turn
    # instead of the step's full end-of-speech time (0: always the full time).
    endpoint_complete_ms: int = 250
    # What may cut a prompt that allows barge-in (a flow's `engines.barge_in` wins):
    # "vad": any speech webrtcvad hears, at once; "words": only speech that is believably
    # a word (`session.inbound`), so a cough or line noise does not, at the price of the
    # word's first ~100-300 ms.
    barge_in: str = "vad"
    # An utterance that waits this long for a free recognizer worker is a no-match (the
    # flow's retry or keypad path takes over) rather than a turn that waits on every call.
    recognizer_wait_ms: int = 5000
    # An utterance held by a worker this long is cancelled inside it (a worker that does not
    # acknowledge is killed and respawned): the flows' longest max_utterance_ms (60 s) plus
    # 10 s to decode; only a leak or a wedged worker gets here.
    recognizer_hold_ms: int = 70000
    # Utterances one recognizer worker decodes at once (`ivr bench recognizer --rate`);
    # each slot costs a ~6 MB decoder once used.
    recognizer_slots: int = 8
    # Personal data (docs/security.md): mask digit runs of 4+ (order, card, phone numbers)
    # in stored turns and in logs; purge turns older than this many days (0: keep them).
    redact_digits: bool = False
    retention_days: int = 0
    # A new SQLite database (no services yet) gets the demo business the shipped flows
    # book and look up (`tools.seed`) at start-up; PostgreSQL never does implicitly.
    demo_seed: bool = True
    log_level: str = "info"
    # Operators' routes (/api, /dashboard, /metrics, /healthz detail): with a token, a
    # bearer or the dashboard's sign-in; without one, only a client on this machine.
    api_token: str = field(default="", repr=False)
    # A bearer for /metrics alone (a scraper need not hold the API token).
    metrics_token: str = field(default="", repr=False)
    # `ivr serve` on a public address without TWILIO_AUTH_TOKEN (or without a way to
    # know its public URL) refuses to start unless this is set: a test bench only.
    insecure: bool = False
    # Believe X-Forwarded-Proto/-Host: only when a reverse proxy in front of us sets them,
    # since any client can send them. Ignored when public_url is set.
    trust_proxy: bool = False
    # Synthesized prompts on disk (survive restarts); empty: beside the database.
    cache_dir: Path | None = None
    cache_mb: int = 64
    # HTTP webhook tools (docs/webhook-tools.md): the file (default: tools.yaml beside the
    # flows directory, optional), the hosts they may call, and the HMAC signing secret.
    tools_file: Path | None = None
    webhook_hosts: str = ""
    webhook_secret: str = field(default="", repr=False)
    # The key /voice signs each call's stream token with (telephony/stream_token.py); empty:
    # derived from TWILIO_AUTH_TOKEN, else drawn at random when the server starts. Every
    # process of one service must share it. A token is good for `stream_token_ttl_s`:
    # Twilio opens the stream within a second or two of fetching /voice.
    stream_secret: str = field(default="", repr=False)
    stream_token_ttl_s: int = 300
    # What one /media WebSocket may do (`telephony.limits`). Twilio's frames are under
    # 1 KiB and its audio arrives in real time, so a bigger message or audio more than
    # `media_flood_ms` ahead of the wall clock is not Twilio: the socket is closed.
    media_max_message_bytes: int = 16 * 1024
    media_flood_ms: int = 3000
    # A socket that sends no `start` this long after opening is closed; a call with no
    # inbound frame for `media_idle_timeout_ms` has lost its line and ends as dropped.
    media_start_timeout_ms: int = 10_000
    media_idle_timeout_ms: int = 30_000
    # Admission (server/admission.py). Live calls per process; 0: no cap. `ivr bench load`
    # measured 1.6-1.8 ms of CPU per second per call playing prompts: 500 calls took 82 %
    # of a core, no caller heard a silence. 400 keeps one process below that with headroom
    # for speech turns; more calls take more processes.
    max_calls: int = 400
    # New calls are also refused while the event loop's p99 lateness over 5 s is above
    # this (0: never): past ~50 ms outbound frames are late for every call at once.
    max_loop_lag_ms: int = 50
    # What a caller turned away hears: "message" (the call is answered, `busy_message`
    # is spoken, then hang-up) or "reject" (<Reject reason="busy">: a busy tone, never
    # answered, never billed). A stream refused after /voice always hears the message.
    # The event loop `ivr serve` runs on (`server.loop`): "auto" is uvloop where it is
    # installed (a default dependency off Windows), else asyncio's own.
    event_loop: str = "auto"
    busy: str = "message"
    busy_message: str = "All our lines are busy right now. Please call back in a few minutes."
    # What a caller hears when the call fails on our side (a bug in the conductor), before
    # it hangs up; the call's outcome is `failed`.
    error_prompt: str = "Sorry, something went wrong on our side. Please call back later."
    # This process among those sharing the database (empty: host, pid and a random tag).
    # Every `heartbeat_ms` it stamps its live calls; at start-up a call with no outcome
    # and no stamp for `stale_after_ms` is closed as `interrupted`: its process is gone.
    # A live process stamps six times in that window, so its calls are never taken.
    instance_id: str = ""
    heartbeat_ms: int = 10_000
    stale_after_ms: int = 60_000
    # Turn and end writes waiting for the database (locked, full) before new ones go
    # straight to the spill file (`ivr db recover`): ~10 writes a call, 100 calls.
    db_queue_max: int = 1000
    # Remote OpenAI-compatible engines (IVR_STT_*, IVR_TTS_*, IVR_LLM_*): None = embedded.
    stt: ProviderConfig | None = None
    # How the remote recognizer is asked (STT_APIS): /audio/transcriptions (whisper-1,
    # gpt-4o-transcribe, ...), "chat": GPT-4o audio via /chat/completions input_audio, or
    # "realtime": a Realtime transcription session streamed as the caller speaks
    # (IVR_REALTIME_URL, else the STT base URL's /realtime), with partial transcripts.
    stt_api: str = "transcriptions"
    tts: ProviderConfig | None = None
    # A remote synthesis with no audio this long after it was asked for is abandoned for
    # that prompt and the embedded voice speaks it: a caller waiting on a hung provider
    # hears silence, and past ~1 s of it callers start saying "hello?".
    tts_first_audio_ms: int = 700
    # SIGTERM: live calls may go on this long (an orchestrator's grace period is often
    # 30 s; 25 leaves time for the goodbye prompt and the records); then they are ended.
    drain_s: int = 25
    # Memory freed by ended calls goes back to the system when the server goes idle, and
    # at least this often while it is busy (`server.memory`). 0: never.
    memory_trim_s: int = 30
    llm: ProviderConfig | None = None
    # Tokens (prompt + completion, as the provider reports them) one call's `llm` steps may
    # use in all; once spent, the step ends with its fallback. 0: no limit. Measured: a
    # concierge booking in 6 requests (question, day, availability, name, confirmation,
    # book) sends 35 kB of messages and tool schemas, about 8,700 tokens at 4 characters a
    # token, each request resending the growing history; 20,000 leaves a slow caller
    # twice that, and stops one who keeps the model talking from running up the bill.
    llm_max_tokens_per_call: int = 20_000
    # How `llm` steps talk (LLM_MODES); audio and realtime need IVR_LLM_* (the key) and
    # realtime IVR_REALTIME_URL (wss://api.openai.com/v1/realtime); a flow may override it.
    llm_mode: str = "pipeline"
    llm_voice: str = "alloy"  # the model's voice in audio and realtime modes
    realtime_url: str | None = None
    realtime_model: str = "gpt-realtime"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ) if env is None else env
        if env.get("IVR_CONFIG"):
            # The file gives defaults; the environment (and then flags) wins over it.
            env = {**config_file_env(Path(env["IVR_CONFIG"]), env), **env}
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in _ENV.items():  # roles' provider settings are read below
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _convert(name, var, raw, str(types[name]))
        for role in ("stt", "tts", "llm"):
            values[role] = provider_from_env(role, env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "db" in values:
            values["db"] = database_url(values["db"])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"IVR_PORT={self.port} is not a TCP port (use 0-65535)")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"IVR_PUBLIC_URL={self.public_url!r} must start with https:// (or http://)"
            )
        if self.llm_mode not in LLM_MODES:
            raise ConfigError(f"IVR_LLM_MODE={self.llm_mode!r} must be one of "
                              f"{', '.join(LLM_MODES)}")
        if self.realtime_url and not self.realtime_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"IVR_REALTIME_URL={self.realtime_url!r} must start with "
                              "wss:// (or ws://)")
        if self.stt_api not in STT_APIS:
            raise ConfigError(f"IVR_STT_API={self.stt_api!r} must be one of "
                              f"{', '.join(STT_APIS)}")
        if self.barge_in not in BARGE_IN_MODES:
            raise ConfigError(f"IVR_BARGE_IN={self.barge_in!r} must be vad or words")
        if not 20 <= self.lead_ms <= 1000:
            raise ConfigError(f"IVR_PLAYER_LEAD_MS={self.lead_ms} must be within 20..1000 ms")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ConfigError(f"IVR_PROCESSES={self.processes} must be within "
                              f"1..{MAX_PROCESSES}")
        if self.processes > 1 and self.port == 0:
            raise ConfigError("IVR_PROCESSES > 1 needs a fixed IVR_PORT: with port 0 each "
                              "process would listen on a port of its own")
        if self.stream_secret and len(self.stream_secret) < 32:
            raise ConfigError("IVR_STREAM_SECRET must be at least 32 characters "
                              "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
        if not 1 <= self.stream_token_ttl_s <= 3600:
            raise ConfigError(f"IVR_STREAM_TOKEN_TTL_S={self.stream_token_ttl_s} must be "
                              "within 1..3600 s")
        for name, (zero, unit) in _ZERO_MEANS.items():
            if getattr(self, name) < 0:
                raise ConfigError(f"{_ENV[name]}={getattr(self, name)} must be 0 ({zero}) or a "
                                  f"number of {unit}")
        for name in ("filler_after_ms", "mark_grace_ms", "recognition_timeout_ms",
                     "recognizer_wait_ms", "recognizer_hold_ms", "tts_first_audio_ms",
                     "media_flood_ms", "media_start_timeout_ms", "media_idle_timeout_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_ENV[name]}={getattr(self, name)} must be at least 1 ms")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"IVR_EVENT_LOOP={self.event_loop!r} must be auto, uvloop or"
                              " asyncio")
        if not 1 <= self.recognizer_slots <= 64:
            raise ConfigError(f"IVR_RECOGNIZER_SLOTS={self.recognizer_slots} must be within 1..64")
        if self.busy not in BUSY_MODES:
            raise ConfigError(f"IVR_BUSY={self.busy!r} must be message or reject")
        if not self.busy_message.strip() or len(self.busy_message) > 1000:
            raise ConfigError("IVR_BUSY_MESSAGE must be a sentence (1..1000 characters)")
        if self.heartbeat_ms < 1 or self.stale_after_ms < 2 * self.heartbeat_ms:
            raise ConfigError(f"IVR_STALE_AFTER_MS={self.stale_after_ms} must be at least "
                              f"twice IVR_HEARTBEAT_MS={self.heartbeat_ms}: a live process's "
                              "calls would be closed as interrupted")
        if self.db_queue_max < 1:
            raise ConfigError(f"IVR_DB_QUEUE_MAX={self.db_queue_max} must be at least 1")
        if self.media_max_message_bytes < 1024:
            # A `start` frame with its parameters (the stream token among them) needs this.
            raise ConfigError(f"IVR_MEDIA_MAX_MESSAGE_BYTES={self.media_max_message_bytes} "
                              "must be at least 1024")

    @property
    def speech_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        # A database server has no directory of ours to sit beside: the working directory.
        if is_database_url(self.db):
            return Path("ivr-cache")
        return Path(self.db).parent / "ivr-cache"

    @property
    def shared_store(self) -> bool:
        """The store is a database server (a URL), not a file: processes on other
        machines may share it, so nothing may be private to one process."""
        return str(self.db).startswith(("postgresql:", "postgres:"))

    @property
    def public_base(self) -> str:
        return self.public_url.rstrip("/")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _convert(name: str, var: str, raw: str, type_name: str) -> Any:
    if type_name == "bool":
        if raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(f"{var}={raw!r} must be 1 or 0 (or true/false)")
    if "int" in type_name:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not an integer") from None
    if name == "db":
        return database_url(raw)
    if "Path" in type_name:
        return Path(raw)
    return raw


def grammar_flags(env: dict[str, str] | None = None) -> tuple[bool, bool]:
    """(`IVR_GRAMMAR_CARRIERS`, `IVR_OOG_REJECT`): carrier words around the embedded
    recognizer's phrase lists, and its in-grammar garbage path for out-of-grammar answers.
    Off by default: measured on `flows/dental_booking.yaml`, either one costs the flow's own
    words more than it gains (README, "Measured"). Read per grammar compiled (cached)."""
    env = dict(os.environ) if env is None else env
    carriers, reject = (
        bool(_convert(var, var, env.get(var, "0"), "bool"))
        for var in ("IVR_GRAMMAR_CARRIERS", "IVR_OOG_REJECT")
    )
    return carriers, reject


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def database_url(value: str | os.PathLike[str]) -> Path | str:
    """What `IVR_DB` / `--db` names: a `postgresql://` (or `postgres://`) URL, kept as a
    string, or else a SQLite file path."""
    text = os.fspath(value)
    if text.startswith(POSTGRES_SCHEMES):
        return text
    return Path(text)


def is_database_url(value: Path | str) -> bool:
    """True for a PostgreSQL URL, False for a SQLite path."""
    return isinstance(value, str) and value.startswith(POSTGRES_SCHEMES)


def env_var(name: str) -> str:
    """The environment variable behind a settings field (for help texts)."""
    return _ENV[name]


def config_file_env(path: Path, env: dict[str, str]) -> dict[str, str]:
    """An `IVR_CONFIG` YAML file as the environment variables it stands for.

    ```yaml
    server: {host: 0.0.0.0, port: 8080, public_url: https://ivr.example.com}
    llm: {base_url: https://api.openai.com/v1, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
    stt: {base_url: https://api.openai.com/v1, model: whisper-1, api_key_env: OPENAI_API_KEY}
    tts: {base_url: https://api.openai.com/v1, voice: alloy, api_key_env: OPENAI_API_KEY}
    ```
    Keys are better kept out of files: `api_key_env` names the variable holding the key.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with server, llm, stt, tts")
    out: dict[str, str] = {}
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: `{section}` must be a mapping")
        if section == "server":
            for key, value in body.items():
                if key not in _ENV:
                    raise ConfigError(f"{path}: server.{key} is not a setting "
                                      f"(one of: {', '.join(sorted(_ENV))})")
                out[_ENV[key]] = str(value)
        elif section in ("llm", "stt", "tts"):
            prefix = f"IVR_{section.upper()}_"
            for key, value in body.items():
                if key == "api_key_env":
                    out[prefix + "API_KEY"] = env.get(str(value), "")
                elif key == "voice" and section == "tts":
                    out["IVR_TTS_VOICE"] = str(value)
                elif key in ROLE_KEYS:
                    out[prefix + ROLE_KEYS[key]] = str(value)
                else:
                    raise ConfigError(f"{path}: {section}.{key} is not a provider setting "
                                      f"(one of: {', '.join([*ROLE_KEYS, 'api_key_env'])})")
        else:
            raise ConfigError(f"{path}: unknown section `{section}` "
                              "(use server, llm, stt, tts)")
    return out
