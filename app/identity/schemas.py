"""Request and response shapes of identity and tenancy."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from app.core.auth import Role
from app.core.schemas import Code, Email, InputModel, LongText, Name, OutputModel

GroupIds = Annotated[list[uuid.UUID], Field(max_length=100)]
Phone = Annotated[str, Field(min_length=1, max_length=50)]


def _lower_email(value: str | None) -> str | None:
    return value.lower() if value is not None else None


class RecordRead(OutputModel):
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    version: int


class OrganizationCreate(InputModel):
    name: Name
    code: Code
    account_manager_id: uuid.UUID | None = None


class OrganizationPatch(InputModel):
    name: Name | None = None
    code: Code | None = None
    account_manager_id: uuid.UUID | None = None


class OrganizationRead(RecordRead):
    code: str
    name: str
    account_manager_id: uuid.UUID | None


class UserCreate(InputModel):
    email: Email
    name: Name
    role: Role
    organization_id: uuid.UUID | None = None
    group_ids: GroupIds = Field(default_factory=list)

    _email = field_validator("email")(_lower_email)


class UserPatch(InputModel):
    email: Email | None = None
    name: Name | None = None
    role: Role | None = None
    organization_id: uuid.UUID | None = None
    group_ids: GroupIds | None = None
    active: bool | None = None

    _email = field_validator("email")(_lower_email)


class UserRead(RecordRead):
    email: str | None
    name: str
    role: Role
    organization_id: uuid.UUID | None
    group_ids: list[uuid.UUID] = Field(
        default_factory=list,
        description="The support groups the user works in; not shown to customers.",
    )
    active: bool


class UserCreated(UserRead):
    api_key: str | None = Field(
        description="The user's first API key. Shown once; store it now. null when this answer "
        "is an Idempotency-Key replay: the key is not kept, issue a new one if it was lost."
    )
    api_key_id: uuid.UUID


class IssuedApiKey(OutputModel):
    """A key just issued, with its secret: what the service hands the router or the CLI."""

    id: uuid.UUID
    api_key: str
    prefix: str
    created_at: datetime
    version: int


class ApiKeyCreated(OutputModel):
    id: uuid.UUID
    api_key: str | None = Field(
        description="Shown once; only its hash is stored. null when this answer is an "
        "Idempotency-Key replay."
    )
    prefix: str
    created_at: datetime
    version: int


class ApiKeyRead(OutputModel):
    id: uuid.UUID
    user_id: uuid.UUID
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    version: int


class Me(OutputModel):
    id: uuid.UUID
    email: str | None
    name: str
    role: Role
    organization_id: uuid.UUID | None
    organization: OrganizationRead | None
    group_ids: list[uuid.UUID]


class GroupCreate(InputModel):
    name: Name
    description: LongText | None = None


class GroupPatch(InputModel):
    name: Name | None = None
    description: LongText | None = None


class GroupRead(RecordRead):
    name: str
    description: str | None


class ContactCreate(InputModel):
    organization_id: uuid.UUID
    email: Email
    name: Name
    phone: Phone | None = None

    _email = field_validator("email")(_lower_email)


class ContactPatch(InputModel):
    email: Email | None = None
    name: Name | None = None
    phone: Phone | None = None

    _email = field_validator("email")(_lower_email)


class ContactRead(RecordRead):
    organization_id: uuid.UUID
    email: str
    name: str
    phone: str | None


class ServiceCreate(InputModel):
    name: Name
    code: Code
    owner_group_id: uuid.UUID | None = None


class ServicePatch(InputModel):
    name: Name | None = None
    code: Code | None = None
    owner_group_id: uuid.UUID | None = None


class ServiceRead(RecordRead):
    code: str
    name: str
    owner_group_id: uuid.UUID | None = Field(
        default=None, description="The support group that owns it; not shown to customers."
    )
