"""One Settings object, read from a YAML file and SOVLLM_* variables, validated at start-up.

Precedence, highest first: explicit overrides (CLI flags), environment, YAML file, defaults.
Nested fields use a double underscore in the environment: SOVLLM_ENGINE__SLOTS=16.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sovllm.engines.catalog import ModelSource, resolve_model
from sovllm.engines.llamacpp.settings import EngineSettings
from sovllm.governance.provenance.settings import ModelsSettings
from sovllm.observability.energy.settings import EnergySettings
from sovllm.pool.settings import ReplicaSettings, RoutingSettings
from sovllm.server_settings import ServerSettings
from sovllm.store.db import hide_password
from sovllm.tls_settings import TlsSettings

ENV_PREFIX = "SOVLLM_"
# The YAML file of the load_settings() call in progress; read by Settings' source list.
_yaml_file: ContextVar[Path | None] = ContextVar("sovllm_yaml_file", default=None)
NESTED_DELIMITER = "__"


class ConfigError(Exception):
    """A setting is wrong. The message is one line that names the setting."""


class AuditSettings(BaseModel):
    """The tamper-evident audit log: its name, signing key and checkpoint cadence."""

    model_config = ConfigDict(extra="forbid")

    origin: str = Field(
        "sovllm",
        min_length=1,
        pattern=r"^[^\s+]+$",
        description="The log's name in its signed checkpoints (no spaces or '+').",
    )
    key_file: Path | None = Field(
        None,
        description="Ed25519 signing key (32 random bytes, base64), e.g. a mounted secret: "
        "sovllm reads it and never writes it. Default: data_dir/audit/signing.key, made at "
        "first start (0600). Gateways that share a database must share this file.",
    )
    durability: Literal["process_crash", "power_loss"] = Field(
        "process_crash",
        description="What a committed entry survives. process_crash: a crash of sovllm or "
        "of the OS process (SQLite synchronous=NORMAL). power_loss: a power cut too (SQLite "
        "synchronous=FULL: the WAL is synced at every commit; group commit keeps the append "
        "rate, docs/reliability.md). PostgreSQL's defaults already survive a power cut.",
    )
    checkpoint_every: int = Field(1000, ge=1, description="Sign a checkpoint every N entries.")
    checkpoint_seconds: float = Field(
        60.0, gt=0, description="... or when this many seconds have passed since the last."
    )

    @field_validator("key_file")
    @classmethod
    def _given(cls, value: Path | None) -> Path | None:
        return given_key_file(value)


KEY_BYTES = 32
"""Both keys a deployment may give: an Ed25519 seed and an AES-256 key."""


def given_key_file(value: Path | None) -> Path | None:
    """A key file the operator provides must exist and hold 32 bytes in base64: sovllm never
    makes a key in a path it was given (a mounted secret is read-only, and a key made there
    would differ between gateways)."""
    if value is None:
        return None
    path = value.expanduser()
    make = f"make one with `openssl rand -base64 {KEY_BYTES} > {path}`"
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist; sovllm does not create it: {make}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a base64 key"
        raise ValueError(f"cannot read {path}: {reason}") from None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{path} does not hold {KEY_BYTES} bytes in base64: {make}")
    return path


AUDIT_MINIMUM_DAYS = 183  # six months


class RetentionSettings(BaseModel):
    """How long each category of data is kept (GDPR Art. 5(1)(e); AI Act Art. 19, 26(6))."""

    model_config = ConfigDict(extra="forbid")

    audit_days: int = Field(
        365, description="Audit metadata (who, when, which model, tokens, outcome)."
    )
    content_days: int = Field(
        30, ge=0, le=3650, description="Prompt and answer content, where a tenant stores it."
    )
    usage_days: int = Field(400, ge=31, description="Usage counters per key, tenant and day.")
    purge_every_s: float = Field(
        3600.0, gt=0, description="How often the server applies retention.* (all of it)."
    )

    @field_validator("audit_days")
    @classmethod
    def _six_months(cls, value: int) -> int:
        if value < AUDIT_MINIMUM_DAYS:
            raise ValueError(
                f"audit logs must be kept at least six months ({AUDIT_MINIMUM_DAYS} days): "
                "EU AI Act Art. 19(1) and 26(6)"
            )
        return value


class PrivacySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presidio: bool = Field(
        False, description="Add Microsoft Presidio's recognizers (needs sovllm[presidio])."
    )
    detectors: list[str] = Field(
        default_factory=list,
        description="More personal-data detectors, as module:function (a function of the text "
        "returning sovllm.governance.privacy.pii.Finding objects). If one raises, the check "
        "fails closed: a tenant's masked prompt is refused, redacted content is not kept.",
    )
    master_key_file: Path | None = Field(
        None,
        description="AES-256 key (32 random bytes, base64) that wraps every data subject's "
        "key, e.g. a mounted secret: sovllm reads it and never writes it. Default: "
        "data_dir/audit/master.key, made at first start (0600).",
    )

    pseudonym_key_file: Path | None = Field(
        None,
        description="HMAC key (32 random bytes, base64) of the pseudonyms in the audit log and "
        "of data subjects' ids, e.g. a mounted secret: sovllm reads it and never writes it. "
        "Default: data_dir/audit/pseudonym.key, made at first start (0600) from the key the "
        "pseudonyms were derived from before it existed, so they stay the same.",
    )

    @field_validator("master_key_file", "pseudonym_key_file")
    @classmethod
    def _given(cls, value: Path | None) -> Path | None:
        return given_key_file(value)


class SecuritySettings(BaseModel):
    """Refused sign-ins (ISO/IEC 27001 A.8.15; docs/audit.md, access logging)."""

    model_config = ConfigDict(extra="forbid")

    auth_failures_per_minute: int = Field(
        30,
        ge=1,
        description="401/403 answers one source address may get in 60 s; past this, its "
        "requests are refused with 429 before their key is checked.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For "
        "names the client; none by default: the source is the connection's peer.",
    )
    strict_permissions: bool = Field(
        False,
        description="Refuse to start (exit 2) when the data folder or a key file is open to "
        "group or others; off: a warning naming the path and the chmod that fixes it.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value


class ComplianceSettings(BaseModel):
    """Who answers for the processing, for the GDPR Art. 30 record (`sovllm compliance records`)."""

    model_config = ConfigDict(extra="forbid")

    controller: str | None = Field(
        None,
        min_length=1,
        description="The controller's name and contact details (GDPR Art. 30(1)(a)), e.g. "
        "'Ospedale San Carlo, via Roma 1, Milano, privacy@osc.it'.",
    )
    dpo_contact: str | None = Field(
        None,
        min_length=1,
        description="The data protection officer's contact details (GDPR Art. 30(1)(a), 37(7)).",
    )


class TelemetrySettings(BaseModel):
    """OpenTelemetry traces and metrics (docs/observability.md): off unless an endpoint is set."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP (protobuf) collector base URL, e.g. http://127.0.0.1:4318 "
        "(/v1/traces and /v1/metrics are appended); subject to 'egress_allow'. None: "
        "nothing is recorded or sent.",
    )
    service_name: str = Field("sovllm", min_length=1, description="The spans' service.name.")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of traces kept (a caller's sampled flag wins)."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise ValueError("not an http(s) URL: its port is not a number") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host, e.g. http://127.0.0.1:4318")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    host: str = Field("127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("sovllm")),
        description="Everything the service writes lives here.",
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _a_folder(cls, value: object) -> object:
        # An empty value would be the current directory: the database wherever one stands.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty: give the folder sovllm writes to")
        return value

    model: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="A model name from the catalog or the path of a GGUF file.",
    )
    served_model_name: str | None = Field(
        None, description="The id clients use in `model`; defaults to the model's name."
    )
    model_dir: Path | None = Field(
        None,
        description="Where model files derived at first start go (a catalog model served in "
        "another format than it ships in); default: data_dir/models. Several data folders "
        "may share one.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; "
        "default: a SQLite file under data_dir.",
    )
    metrics_require_key: bool = Field(
        False, description="Require an API key (any role) to read /metrics."
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may call the API from a "
        "browser; none by default: only the service's own pages.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text",
        description="json: one JSON object a line per log event, with the request id and the "
        "trace id (docs/observability.md).",
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    replicas: list[ReplicaSettings] = Field(
        default_factory=list,
        description="The replica pool; empty: one embedded engine inside the gateway process.",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    egress_allow: list[str] = Field(
        default_factory=list,
        description="Upstream hosts or networks (CIDR) outside loopback and private ranges "
        "that replicas may reach; nothing else leaves the machine.",
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    stop_mode: Literal["drain", "cut"] = Field(
        "drain",
        description="What a stop does to requests in flight by default: let them finish, or "
        "cut them within a second with finish_reason 'stop'.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def model_folder(self) -> Path:
        """Where derived model files go (`model_dir`, else data_dir/models)."""
        return (self.model_dir or self.data_dir / "models").expanduser()

    def resolve_model(self, name_or_path: str | None = None, derive: bool = True) -> ModelSource:
        """The weights of `name_or_path` (default: `model`), derived into `model_folder` if the
        catalog serves them in another format (with `derive` false: only named); raises
        ModelNotFoundError."""
        name = name_or_path or self.model
        return resolve_model(name, self.model_folder, self.data_dir / "cache", derive)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls, _yaml_file.get()))


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data = _read_yaml(path) if path is not None else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings, or raise ConfigError naming the first bad setting."""
    if config_file is None and os.environ.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(os.environ[f"{ENV_PREFIX}CONFIG"])
    given = {k: v for k, v in overrides.items() if v is not None}
    token = _yaml_file.set(config_file)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _yaml_file.reset(token)


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    name = ".".join(loc) or "settings"
    env = ENV_PREFIX + NESTED_DELIMITER.join(loc).upper()
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown setting"
    value = err.get("input")
    shown = f" (got {value!r})" if err["type"] != "extra_forbidden" and value is not None else ""
    shown = hide_password(shown)  # a database_url in the message keeps its password to itself
    more = len(exc.errors()) - 1
    tail = f"; and {more} more" if more else ""
    return f"invalid setting '{name}' ({env}): {message}{shown}{tail}"
