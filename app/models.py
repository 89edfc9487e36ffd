"""Every table of SDMS, imported so that `metadata` is complete (alembic, tests)."""

from __future__ import annotations

from app.core import changelog, idempotency, versions
from app.core.db import metadata
from app.identity import models as identity_models
from app.incidents import models as incident_models
from app.itil import journal, numbers
from app.slm import models as slm_models
from app.slm import priority

__all__ = [
    "changelog",
    "idempotency",
    "identity_models",
    "incident_models",
    "journal",
    "metadata",
    "numbers",
    "priority",
    "slm_models",
    "versions",
]
