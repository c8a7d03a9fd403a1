"""`tls.*`: HTTPS from the server itself, and client certificates where wanted.

Outside the layers, like config.py (which includes it); serve/tls.py applies it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TlsSettings(BaseModel):
    """HTTPS (README.md, "TLS"); off unless `cert_file` and `key_file` are set."""

    model_config = ConfigDict(extra="forbid")

    cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the server presents (its own first); with key_file "
        "the server speaks HTTPS only, and sends Strict-Transport-Security.",
    )
    key_file: Path | None = Field(None, description="PEM private key of cert_file.")
    client_ca: Path | None = Field(
        None,
        description="PEM CA certificate(s): every client must present a certificate they "
        "signed (mutual TLS), besides its API key. Needs cert_file and key_file.",
    )

    @field_validator("cert_file", "key_file", "client_ca")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except FileNotFoundError:
            raise ValueError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise ValueError(f"{path} is a directory, not a PEM file") from None
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        return path

    @model_validator(mode="after")
    def _paired(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if self.client_ca is not None and self.cert_file is None:
            raise ValueError("client_ca needs cert_file and key_file (client certificates "
                             "exist only over TLS)")  # fmt: skip
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None
