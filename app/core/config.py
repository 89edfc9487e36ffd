"""Settings: configuration comes only from `SDMS_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Everything but the operations endpoints lives under this path.
API_PREFIX = "/api/v1"


class InstanceRole(StrEnum):
    standalone = "standalone"
    regional = "regional"
    central = "central"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDMS_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///sdms.db"
    region: str = Field(default="hq", pattern=r"^[a-z][a-z0-9]{1,9}$")
    role: InstanceRole = InstanceRole.standalone
    admin_api_key: SecretStr | None = None

    auto_close_days: int = Field(default=7, ge=1, le=365)
    embedded_worker: bool = True
    # The contract's events (SLA warnings and breaches, ETAs) fire within 10 s: a job's run
    # takes some of that, so the idle jobs look at least every 8 s.
    worker_interval_seconds: float = Field(default=2.0, gt=0, le=8)
    idempotency_ttl_hours: int = Field(default=48, ge=24)

    # A request holds one connection: size the pool for the requests in flight per process.
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    # How many requests a worker process serves at once, each on a connection of the pool;
    # later ones wait their turn in order of arrival. A process runs one request's Python at
    # a time, so a few in flight keep it busy while others wait on the database; many more
    # only share the CPU (with their database sessions) and make the slowest wait longer.
    worker_concurrency: int = Field(default=4, ge=1, le=200)
    # Who holds an API key is cached per process while PostgreSQL notifies every change
    # (app/identity/principals.py); entries expire after this many seconds. 0: no cache.
    auth_cache_seconds: float = Field(default=60, ge=0, le=3600)
    log_level: str = "INFO"
    access_log: bool = False

    @field_validator("region", mode="before")
    @classmethod
    def _lower_region(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _concurrency_within_pool(self) -> Settings:
        if "worker_concurrency" not in self.model_fields_set:  # the default fits any pool
            self.worker_concurrency = min(self.worker_concurrency, self.db_pool_size)
        elif self.worker_concurrency > self.db_pool_size:
            raise ValueError(
                f"SDMS_WORKER_CONCURRENCY ({self.worker_concurrency}) cannot exceed "
                f"SDMS_DB_POOL_SIZE ({self.db_pool_size}): each request holds a connection"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
