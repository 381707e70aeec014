"""Configuration: one description of every setting, read from env, PlaceOS's own env names and YAML.

The exporter drops into a PlaceOS compose file with the same env block as rest-api/core: each backend
field lists the PlaceOS env names it accepts (internals §1.1 etcd, §2.1 RethinkDB, §2.2 PostgreSQL,
§3 Redis, §4 Elasticsearch, §8 partner environment). An optional YAML file describes several clusters
and per-probe tuning. Every secret can also come from a file (``<ENV>_FILE``, or ``<field>_file`` in
YAML). ``check-config`` and docs/configuration.md are generated from these models.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.model.vocabulary import Era, ProbeName

ENV_PREFIX = "PLACEOS_EXPORTER_"


def env(*names: str, secret: bool = False) -> dict[str, Any]:
    """Field metadata: the PlaceOS env names a field also accepts (besides PLACEOS_EXPORTER_<SEC>_<FIELD>)."""
    return {"env": list(names), "secret": secret}


class Section(BaseModel):
    """A backend's settings. ``<secret>_file`` in YAML reads a secret from a file."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            path = out.pop(f"{name}_file", None)
            if path is None:
                continue
            if field.annotation not in (SecretStr, SecretStr | None):
                raise ValueError(f"{name}_file: {name} is not a secret setting")
            out[name] = read_secret_file(str(path))
        return out

    @property
    def configured(self) -> bool:
        """Set explicitly (YAML, env, a PlaceOS env name): never just our defaults."""
        return bool(self.model_fields_set - {"enabled"})

    @property
    def probed(self) -> bool:
        """A backend section is probed when switched on, or configured and not switched off."""
        enabled = getattr(self, "enabled", None)
        return bool(enabled) if enabled is not None else self.configured

    def secrets(self) -> Iterator[str]:
        """Every secret value in this section, for redaction."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                yield value.get_secret_value()
            elif isinstance(value, str) and "://" in value:
                password = urlsplit(value).password
                if password:
                    yield password


class TLSSettings(Section):
    """Client TLS options shared by every backend section."""

    ca_file: Path | None = Field(None, description="CA bundle to verify the server's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client certificate's key")
    insecure_skip_verify: bool = Field(False, description="do not verify the server's certificate")

    @model_validator(mode="after")
    def _key_needs_its_certificate(self) -> TLSSettings:
        if self.key_file is not None and self.cert_file is None:
            hint = (
                " (the API key is api_key, PLACEOS_EXPORTER_API_API_KEY[_FILE])"
                if isinstance(self, ApiSettings)
                else ""
            )
            raise ValueError(f"key_file is a TLS client key and needs cert_file{hint}")
        return self


class EtcdSettings(TLSSettings):
    """etcd, eras A/B: service discovery and module placement (internals §1.1)."""

    enabled: bool | None = Field(None, description="probe etcd; default: where configured, in eras A and B")
    host: str = Field("localhost", description="etcd host", json_schema_extra=env("ETCD_HOST"))
    port: int = Field(2379, ge=1, le=65535, description="etcd client port", json_schema_extra=env("ETCD_PORT"))
    tls: bool = Field(False, description="use https to the gateway")
    username: str | None = Field(None, description="etcd user", json_schema_extra=env("ETCD_USERNAME"))
    password: SecretStr | None = Field(
        None, description="etcd password", json_schema_extra=env("ETCD_PASSWORD", secret=True)
    )
    api_version: Literal["auto", "v3", "v3beta"] = Field(
        "auto",
        description="JSON gateway prefix; auto tries v3 then v3beta (crystal-etcd < 1.2.5)",
        json_schema_extra=env("ETCD_API_VERSION"),
    )
    namespace: str = Field(
        "service", description="hound-dog key namespace", json_schema_extra=env("HD_SERVICE_NAMESPACE")
    )

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{bracket(self.host)}:{self.port}"


class RedisSettings(TLSSettings):
    """Redis, all eras: runtime state, and core discovery in era C (internals §1.2, §3)."""

    enabled: bool | None = Field(None, description="probe Redis; default: where configured")
    url: str = Field(
        "redis://localhost:6379",
        description="Redis URL (redis:// or rediss://); a password inside it is treated as a secret",
        json_schema_extra=env("REDIS_URL"),
    )
    username: str | None = Field(None, description="Redis ACL user (overrides the URL's)")
    password: SecretStr | None = Field(
        None, description="Redis password (overrides the URL's)", json_schema_extra=env(secret=True)
    )
    module_scan_cap: int = Field(20000, ge=0, description="at most this many status/<module> hashes are read per cycle")


class RethinkDBSettings(TLSSettings):
    """RethinkDB, era A: the configuration database (internals §2.1)."""

    enabled: bool | None = Field(None, description="probe RethinkDB; default: where configured, in era A")
    host: str = Field("localhost", description="RethinkDB host", json_schema_extra=env("RETHINKDB_HOST"))
    port: int = Field(28015, ge=1, le=65535, description="driver port", json_schema_extra=env("RETHINKDB_PORT"))
    db: str = Field(
        "test",
        description="PlaceOS database (place_development in the partner env)",
        json_schema_extra=env("RETHINKDB_DB", "RETHINKDB_DATABASE"),
    )
    user: str = Field("admin", description="RethinkDB user", json_schema_extra=env("RETHINKDB_USER"))
    password: SecretStr | None = Field(
        None, description="RethinkDB password", json_schema_extra=env("RETHINKDB_PASSWORD", secret=True)
    )
    tls: bool = Field(False, description="use TLS to the driver port")


class PostgresSettings(TLSSettings):
    """PostgreSQL, eras B/C: the configuration database (internals §2.2)."""

    enabled: bool | None = Field(None, description="probe PostgreSQL; default: where configured, in eras B and C")
    url: str | None = Field(
        None,
        description="PG_DATABASE_URL (wins over the PG_* parts); a password inside it is a secret",
        json_schema_extra=env("PG_DATABASE_URL"),
    )
    host: str = Field("localhost", description="PostgreSQL host", json_schema_extra=env("PG_HOST"))
    port: int = Field(5432, ge=1, le=65535, description="PostgreSQL port", json_schema_extra=env("PG_PORT"))
    db: str = Field("test", description="PlaceOS database", json_schema_extra=env("PG_DB", "PG_DATABASE"))
    user: str = Field("postgres", description="PostgreSQL user", json_schema_extra=env("PG_USER"))
    password: SecretStr | None = Field(
        None, description="PostgreSQL password", json_schema_extra=env("PG_PASSWORD", secret=True)
    )
    sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer", description="libpq-style TLS mode"
    )


class ElasticsearchSettings(TLSSettings):
    """Elasticsearch: the search indices behind every list route (internals §4)."""

    enabled: bool | None = Field(None, description="probe Elasticsearch; default: where configured")
    uri: str | None = Field(
        None,
        description="full URI (scheme decides TLS); wins over host/port",
        json_schema_extra=env("ELASTIC_URI", "ES_URI"),
    )
    host: str = Field("localhost", description="ES host", json_schema_extra=env("ELASTIC_HOST", "ES_HOST"))
    port: int = Field(9200, ge=1, le=65535, description="ES port", json_schema_extra=env("ELASTIC_PORT", "ES_PORT"))
    tls: bool = Field(False, description="use https", json_schema_extra=env("ELASTIC_TLS", "ES_TLS"))
    username: str | None = Field(None, description="basic-auth user", json_schema_extra=env("ELASTIC_USER"))
    password: SecretStr | None = Field(
        None, description="basic-auth password", json_schema_extra=env("ELASTIC_PASSWORD", secret=True)
    )
    api_key: SecretStr | None = Field(
        None, description="ES API key (base64 id:key)", json_schema_extra=env(secret=True)
    )
    index_lag_interval: float = Field(300.0, gt=0, description="seconds between search-index lag counts")
    index_lag_threshold: int = Field(
        10, ge=0, description="documents behind above which a lag that does not shrink between counts is a stall"
    )


class ApiSettings(TLSSettings):
    """The PlaceOS rest-api as users reach it (internals §5): the user-path probes."""

    url: str | None = Field(
        None,
        description="base URL of PlaceOS (https://placeos.example.com); user-path probes need it",
        json_schema_extra=env("PLACE_URI"),
    )
    host_header: str | None = Field(
        None,
        description="Host header = the authority's domain (internals §5.2); default: the URL's host",
        json_schema_extra=env("PLACE_DOMAIN"),
    )
    api_key: SecretStr | None = Field(
        None,
        description="X-API-Key '<id>.<secret>' of a support/admin user",
        json_schema_extra=env(secret=True),
    )
    username: str | None = Field(None, description="OAuth password-grant user", json_schema_extra=env("PLACE_EMAIL"))
    password: SecretStr | None = Field(
        None,
        description="OAuth password-grant password",
        json_schema_extra=env("PLACE_PASSWORD", secret=True),
    )
    client_id: str | None = Field(None, description="OAuth client id")
    client_secret: SecretStr | None = Field(None, description="OAuth client secret", json_schema_extra=env(secret=True))
    triggers_url: str | None = Field(None, description="triggers service base URL; default: url")
    system_id: str | None = Field(None, description="system used by module_functions, execute and websocket")
    module: str | None = Field(None, description="module slug in that system, e.g. Display_1")
    function: str | None = Field(
        None, description="function to execute: pick an idempotent, read-only one; execute is off without it"
    )
    args: list[Any] = Field(default_factory=list, description="positional arguments of the function (JSON)")
    status_key: str = Field("connected", description="status the websocket probe binds to")
    crash_hold_seconds: float = Field(
        600.0, ge=0, description="a driver crash (a launch count that rose) stays a failure this long"
    )
    changing_status: str | None = Field(
        None,
        description="a status of api.module that changes every few seconds (a clock, a heartbeat): the "
        "status_delivery probe proves its changes reach a subscriber; off without it",
    )

    @field_validator("args", mode="before")
    @classmethod
    def _args_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class ProbeTuning(BaseModel):
    """Per-probe schedule. The timeout must be below the interval (design §1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    interval: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)


SECTIONS: dict[str, type[Section]] = {
    "api": ApiSettings,
    "etcd": EtcdSettings,
    "redis": RedisSettings,
    "rethinkdb": RethinkDBSettings,
    "postgres": PostgresSettings,
    "elasticsearch": ElasticsearchSettings,
}


class ClusterConfig(BaseModel):
    """One PlaceOS cluster: where its backends and API are, and which era it runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="cluster name used by /probe")
    era: Literal["auto", "A", "B", "C", "D"] = Field(
        "auto",
        description="auto reads platform_version from /api/engine/v2/version, and /cluster/versions for D (design §2)",
    )
    era_fallback: Literal["A", "B", "C", "D"] | None = Field(
        None, description="era when auto cannot tell; default: inferred from the configured backends"
    )
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    etcd: EtcdSettings = Field(default_factory=EtcdSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    rethinkdb: RethinkDBSettings = Field(default_factory=RethinkDBSettings)  # type: ignore[arg-type]
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)  # type: ignore[arg-type]
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)  # type: ignore[arg-type]
    probes: dict[ProbeName, ProbeTuning] = Field(default_factory=dict, description="per-probe overrides")

    def sections(self) -> Iterator[tuple[str, Section]]:
        for name in SECTIONS:
            yield name, cast(Section, getattr(self, name))

    def secrets(self) -> Iterator[str]:
        for _, section in self.sections():
            yield from section.secrets()

    def inferred_era(self) -> Era:
        """The era the configured backends point at, when the API cannot tell (design §2)."""
        if self.era_fallback:
            return Era(self.era_fallback)
        if "host" in self.rethinkdb.model_fields_set or self.rethinkdb.enabled:
            return Era.A
        configured_pg = bool(self.postgres.model_fields_set - {"enabled"}) or self.postgres.enabled
        configured_etcd = bool(self.etcd.model_fields_set - {"enabled"}) or self.etcd.enabled
        if configured_etcd and configured_pg:
            return Era.B
        if configured_pg:
            return Era.C
        return Era.A


class Settings(BaseSettings):
    """Exporter-wide settings (env PLACEOS_EXPORTER_*, beating the YAML file) and the clusters."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    listen_address: str = Field(
        "0.0.0.0:9864", description="host:port the HTTP server listens on; several, comma-separated"
    )

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        for address in value.split(","):
            _, sep, port = address.strip().rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("expected host:port with a port from 0 to 65535")
        return value

    @property
    def listen_addresses(self) -> list[str]:
        return [a.strip() for a in self.listen_address.split(",")]

    log_format: Literal["plain", "json"] = Field("plain", description="log line format")
    revision: str = Field("unknown", description="source revision built into the image (the Dockerfile sets it)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    web_config_file: Path | None = Field(
        None, description="exporter-toolkit web config (TLS, basic auth) for the HTTP server"
    )
    interval: float = Field(15.0, gt=0, description="default seconds between runs of a probe")
    timeout: float = Field(5.0, gt=0, description="default deadline of a probe run (below the interval)")
    probes: dict[ProbeName, ProbeTuning] = Field(default_factory=dict, description="per-probe overrides")
    history: int = Field(20, ge=1, le=1000, description="recent results kept per probe for /diagnose and /")
    clusters: list[ClusterConfig] = Field(default_factory=list, description="the PlaceOS clusters to watch")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; env beats it, as in the usual 12-factor order.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _check(self) -> Settings:
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise ValueError("cluster names must be unique")
        if not self.clusters:
            raise ValueError("no cluster configured")
        # Exporter-wide per-probe tuning applies to every cluster; a cluster's own setting wins.
        for cluster in self.clusters:
            for probe, tuning in self.probes.items():
                own = cluster.probes.get(probe)
                cluster.probes[probe] = (
                    tuning
                    if own is None
                    else ProbeTuning(
                        enabled=tuning.enabled if own.enabled is None else own.enabled,
                        interval=own.interval or tuning.interval,
                        timeout=own.timeout or tuning.timeout,
                    )
                )
        return self

    def secrets(self) -> list[str]:
        """Every secret value configured, longest first, for the log/text redactor."""
        values = {s for c in self.clusters for s in c.secrets() if len(s) >= 3}
        return sorted(values, key=len, reverse=True)


class ConfigError(Exception):
    """A bad setting: the message is one line that names the field and never echoes a value."""


def read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None


def cluster_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The default cluster from env: PLACEOS_EXPORTER_<SECTION>_<FIELD>, then PlaceOS's own names."""
    cluster: dict[str, Any] = {}
    for key in ("name", "era", "era_fallback"):
        if value := environ.get(
            f"{ENV_PREFIX}CLUSTER_{key.upper()}" if key == "name" else f"{ENV_PREFIX}{key.upper()}"
        ):
            cluster[key] = value
    for section, model in SECTIONS.items():
        values: dict[str, Any] = {}
        for field_name, names, secret in env_names(section, model):
            for name in names:
                if name in environ:
                    values[field_name] = environ[name]
                    break
                if secret and f"{name}_FILE" in environ:
                    try:
                        values[field_name] = read_secret_file(environ[f"{name}_FILE"])
                    except ValueError as exc:
                        raise ConfigError(f"{name}_FILE: {exc}") from None
                    break
        if values:
            cluster[section] = values
    return cluster


def known_env_names() -> set[str]:
    """Every PLACEOS_EXPORTER_* name the exporter reads (with the _FILE forms of secrets)."""
    names = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if name != "clusters"}
    names |= {f"{ENV_PREFIX}CLUSTER_NAME", f"{ENV_PREFIX}ERA", f"{ENV_PREFIX}ERA_FALLBACK"}
    for section, model in SECTIONS.items():
        for _, found, secret in env_names(section, model):
            names.add(found[0])
            if secret:
                names.add(f"{found[0]}_FILE")
    return names


def unknown_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per PLACEOS_EXPORTER_* name that no setting reads, with the nearest valid one: a mistyped
    name would otherwise silently leave its setting at the default (and its probes off)."""
    known = known_env_names()
    out = []
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known):
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {near[0]}?" if near else ""
        out.append(f"unknown environment variable {name} is ignored{hint}")
    return out


def env_names(section: str, model: type[Section]) -> Iterator[tuple[str, list[str], bool]]:
    """(field, env names in order of precedence, is secret) for every field of a section."""
    for field_name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        placeos_names = cast(list[str], extra.get("env", []))
        secret = field.annotation in (SecretStr, SecretStr | None)
        yield field_name, [f"{ENV_PREFIX}{section}_{field_name}".upper(), *placeos_names], secret


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the YAML file (if any), env, and CLI overrides. Raises ConfigError with one clear line.

    ``environ`` feeds the default cluster's backend settings; exporter-wide PLACEOS_EXPORTER_* settings
    are read by pydantic-settings from the process environment.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config file {config_file}{where}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: top level must be a mapping")
        data = dict(loaded or {})
    from_env = not data.get("clusters")
    if from_env:
        data["clusters"] = [cluster_from_env(environ)]
    data.update(overrides or {})
    try:
        return Settings(**data)
    except ValidationError as exc:
        source = env_source(exc, environ, from_env, set(overrides or {}))
        raise ConfigError(describe_validation_error(exc, source)) from None


def env_source(exc: ValidationError, environ: Mapping[str, str], cluster_from_environ: bool, flags: set[str]) -> str:
    """The environment variable that supplied the first invalid value, if one did: the name a user typed."""
    loc = exc.errors(include_input=False, include_url=False)[0]["loc"]
    if len(loc) == 1 and str(loc[0]) not in flags:
        name = f"{ENV_PREFIX}{str(loc[0]).upper()}"
        return name if name in environ else ""
    if cluster_from_environ and len(loc) >= 4 and loc[0] == "clusters" and str(loc[2]) in SECTIONS:
        section, field = str(loc[2]), str(loc[3])
        for field_name, names, secret in env_names(section, SECTIONS[section]):
            if field_name == field:
                for name in names:
                    if name in environ or (secret and f"{name}_FILE" in environ):
                        return name if name in environ else f"{name}_FILE"
    return ""


def describe_validation_error(exc: ValidationError, env_name: str = "") -> str:
    """First error as 'invalid setting <where>: <message>': the environment variable that supplied the
    value where one did, else the setting's path; never echoes the value."""
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = env_name or ".".join(str(p) for p in err["loc"]) or "settings"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid setting {loc}: {err['msg']}{more}"


def bracket(host: str) -> str:
    """IPv6 literals need brackets in URLs."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def redact_url(url: str) -> str:
    """A URL safe to print: the password (and any query string) replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
