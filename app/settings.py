"""Settings from the environment (documented in the README), overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINGATE_", extra="ignore", populate_by_name=True)

    mongodb_uri: str | None = Field(
        default=None,
        validation_alias="MONGODB_URI",
        description="A real MongoDB. When unset, FinGate starts the embedded database (SecantusDB) as a child process.",
    )
    db: str = Field(default="fingate", description="Database name.")
    data_dir: Path = Field(default=Path(".fingate-data"), description="Storage directory of the embedded database.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8000, description="HTTP port.")
    load_demo: bool = Field(default=True, description="Load the R5 examples and demo data when the database is empty.")
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
