"""HTTP face of service-level management (section 7 of the contract)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.core.context import Context
from app.core.deps import Admin, CurrentPrincipal, ReadConn, Write
from app.core.responses import Reply, json_response
from app.slm.priority import (
    PriorityMatrixBody,
    PriorityMatrixRead,
    load_matrix,
    save_matrix,
)

router = APIRouter(prefix="/slm", tags=["slm"])


@router.get("/priority-matrix", response_model=PriorityMatrixRead)
async def get_priority_matrix(conn: ReadConn, _: CurrentPrincipal) -> Response:
    """impact -> urgency -> priority, as used for records created or reclassified now."""
    matrix, version = await load_matrix(conn)
    return json_response(PriorityMatrixRead(matrix=matrix, version=version), version=version)


@router.put("/priority-matrix", response_model=PriorityMatrixRead)
async def put_priority_matrix(body: PriorityMatrixBody, write: Write, _: Admin) -> Response:
    """Replace the matrix (admin). Existing records keep their priority until reclassified."""

    async def action(conn: AsyncConnection, ctx: Context) -> Reply:
        view = await save_matrix(conn, ctx=ctx, matrix=body.matrix)
        return Reply(view, 200, view.version)

    return await write.run(action)
