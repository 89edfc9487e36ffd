"""SLM shapes shared with other domains (the incident's `sla` field)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from app.core.schemas import OutputModel


class SlaClockRead(OutputModel):
    kind: Literal["response", "resolution"]
    agreement_id: uuid.UUID
    target_seconds: int
    elapsed_seconds: int
    due_at: datetime | None
    state: Literal["running", "paused", "met", "breached"]
    breached: bool
    percent: float
    stopped_at: datetime | None = None
