"""Who is calling: API keys (stored as SHA-256 hashes), roles and the principal of a request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "sdms_"


class Role(StrEnum):
    admin = "admin"
    manager = "manager"
    agent = "agent"
    integration = "integration"
    customer = "customer"


STAFF = frozenset({Role.admin, Role.manager, Role.agent, Role.integration})
MANAGERS = frozenset({Role.admin, Role.manager})
ADMINS = frozenset({Role.admin})

# The principal of the bootstrap key (`SDMS_ADMIN_API_KEY`): an admin that is no user row.
BOOTSTRAP_ADMIN_ID = uuid.UUID(int=0)
# SDMS itself, acting from its background jobs (auto-close, SLA escalations).
SYSTEM_ID = uuid.UUID(int=1)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    role: Role
    organization_id: uuid.UUID | None
    name: str
    key_id: uuid.UUID | None = None

    @property
    def is_customer(self) -> bool:
        return self.role is Role.customer

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF

    @property
    def is_bootstrap(self) -> bool:
        return self.user_id == BOOTSTRAP_ADMIN_ID

    @property
    def author_role(self) -> str | None:
        """The role to record with a change (none when SDMS itself acts)."""
        return None if self.user_id == SYSTEM_ID else self.role.value

    @property
    def author_id(self) -> uuid.UUID | None:
        """The user to record as the author of a change (none for the bootstrap key or SDMS)."""
        return None if self.user_id in (BOOTSTRAP_ADMIN_ID, SYSTEM_ID) else self.user_id


BOOTSTRAP_ADMIN = Principal(BOOTSTRAP_ADMIN_ID, Role.admin, None, "bootstrap admin")
SYSTEM = Principal(SYSTEM_ID, Role.admin, None, "SDMS")


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Keys carry 256 random bits, so a plain SHA-256 is enough: no salt or stretching needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def bootstrap_key_matches(presented: str, configured: str | None) -> bool:
    return configured is not None and hmac.compare_digest(presented.encode(), configured.encode())
