"""The data set: organizations, people and keys through SDMS's API, agreements when SDMS has
them, and incidents in a realistic mix of states, priorities and organizations.

Incidents are made in two ways (see README, "The data set"):
- through SDMS's own HTTP API (create, then the transitions and comments that bring each one to
  its state), so rows, journal and change log are exactly what SDMS writes;
- the remainder by cloning those API-made incidents in SQL (`INSERT .. SELECT`) with their
  journal entries and change-log rows, under new ids and numbers and with timestamps shifted
  into the past, because the API path alone takes too long for 100,000 incidents here.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.http import Client

ORGANIZATIONS = 20
AGENTS = 8
# Final states of seeded incidents and their shares (open work, recent resolutions, history).
STATE_MIX = {
    "new": 0.20,
    "in_progress": 0.22,
    "on_hold": 0.08,
    "resolved": 0.10,
    "closed": 0.35,
    "cancelled": 0.05,
}
IMPACT_URGENCY = [1] * 1 + [2] * 3 + [3] * 6  # mostly low, some high
CHANNELS = ["portal", "email", "phone", "api", "chat", "monitoring"]
REQUEST_TYPES = ["incident"] * 6 + ["service_request"] * 2 + ["consultation", "complaint"]
TITLES = [
    "Calls drop after 30 seconds",
    "Invoices not generated for the billing cycle",
    "Portal login fails with an error page",
    "SMS notifications are delayed",
    "Roaming CDRs missing in the rating engine",
    "Tariff change not applied to subscribers",
    "Payment gateway times out",
    "Reports export hangs at 99 %",
]


@dataclass
class Cast:
    """Who is who in the seeded service desk, with their API keys."""

    admin_key: str
    organizations: list[dict[str, Any]] = field(default_factory=list)
    customer_keys: list[str] = field(default_factory=list)  # one per organization, same order
    agents: list[tuple[str, str]] = field(default_factory=list)  # (user id, key)
    groups: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    agreements: list[str] = field(default_factory=list)
    agreements_supported: bool = False
    org_weights: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "organizations": [o["id"] for o in self.organizations],
            "agents": [a[0] for a in self.agents],
            "groups": self.groups,
            "services": self.services,
            "agreements": self.agreements,
            "agreements_supported": self.agreements_supported,
        }


async def seed_cast(client: Client, run_tag: str) -> Cast:
    """Organizations, groups, services, customers (one per organization) and agents."""
    admin = client
    assert admin.key is not None
    cast = Cast(admin_key=admin.key)
    for name in ("1st line", "2nd line", "Field engineers"):
        group = await admin.ok("POST", "/api/v1/groups", {"name": f"{name} {run_tag}"}, 201)
        cast.groups.append(group["id"])
    body: dict[str, Any]
    for i, name in enumerate(("Billing", "Telephony", "Portal", "Messaging", "Roaming")):
        body = {"name": name, "code": f"SVC{i}{run_tag}", "owner_group_id": cast.groups[i % 3]}
        cast.services.append((await admin.ok("POST", "/api/v1/services", body, 201))["id"])
    for i in range(ORGANIZATIONS):
        body = {"name": f"Operator {i + 1:02d}", "code": f"OP{i + 1:02d}{run_tag}"}
        cast.organizations.append(await admin.ok("POST", "/api/v1/organizations", body, 201))
    # A few large customers and a long tail, as in a real service desk.
    cast.org_weights = [1.0 / (i + 1) ** 0.8 for i in range(ORGANIZATIONS)]
    for i, org in enumerate(cast.organizations):
        body = {
            "email": f"customer{i + 1}.{run_tag}@example.com",
            "name": f"Customer of {org['name']}",
            "role": "customer",
            "organization_id": org["id"],
        }
        user = await admin.ok("POST", "/api/v1/users", body, 201)
        cast.customer_keys.append(user["api_key"])
    for i in range(AGENTS):
        body = {
            "email": f"agent{i + 1}.{run_tag}@example.com",
            "name": f"Agent {i + 1}",
            "role": "agent",
            "group_ids": [cast.groups[i % 3]],
        }
        user = await admin.ok("POST", "/api/v1/users", body, 201)
        cast.agents.append((user["id"], user["api_key"]))
    return cast


async def seed_agreements(client: Client, cast: Cast) -> None:
    """Agreements of section 7 of the contract, when SDMS serves them (404/405 means not yet):
    an 8x5 office calendar and a 24x7 one, a default agreement, one per organization for the
    first half of them, and a service-specific one."""
    status, _ = await client.call("POST", "/api/v1/slm/agreements", {})
    if status in (404, 405):
        cast.agreements_supported = False
        return
    cast.agreements_supported = True
    office = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
    office.update(sat=[], sun=[])
    cal_8x5 = await client.ok(
        "POST",
        "/api/v1/slm/calendars",
        {"name": "Office 8x5", "timezone": "Europe/Moscow", "always_on": False, "hours": office,
         "holidays": ["2026-01-01", "2026-01-07", "2026-05-09"]},
        201,
    )  # fmt: skip
    cal_24x7 = await client.ok(
        "POST",
        "/api/v1/slm/calendars",
        {"name": "Around the clock", "timezone": "UTC", "always_on": True, "hours": {},
         "holidays": []},
        201,
    )  # fmt: skip

    def targets(scale: float) -> list[dict[str, Any]]:
        base = {1: (900, 14400), 2: (1800, 28800), 3: (3600, 86400), 4: (7200, 172800),
                5: (14400, 432000)}  # fmt: skip
        out: list[dict[str, Any]] = []
        for priority, (response, resolution) in base.items():
            target: dict[str, Any] = {
                "priority": priority,
                "response_seconds": int(response * scale),
                "resolution_seconds": int(resolution * scale),
            }
            if priority == 1:
                target["calendar_id"] = cal_24x7["id"]  # P1: the on-call engineer answers
            out.append(target)
        return out

    bodies: list[dict[str, Any]] = [
        {"name": "Standard support", "calendar_id": cal_8x5["id"], "targets": targets(1.0)}
    ]
    for org in cast.organizations[: ORGANIZATIONS // 2]:
        bodies.append(
            {"name": f"Premium support: {org['name']}", "organization_id": org["id"],
             "calendar_id": cal_8x5["id"], "warn_at_percent": 80, "targets": targets(0.5)}
        )  # fmt: skip
    bodies.append(
        {"name": "Billing service", "service_id": cast.services[0],
         "calendar_id": cal_24x7["id"], "targets": targets(0.75)}
    )  # fmt: skip
    for body in bodies:
        cast.agreements.append((await client.ok("POST", "/api/v1/slm/agreements", body, 201))["id"])


# --- incidents through the API --------------------------------------------------------------


@dataclass
class Plan:
    """One incident to make: who opens it, what it says, and the steps to its final state."""

    org: int
    by_customer: bool
    body: dict[str, Any]
    state: str
    agent: int
    comment: bool


def plan_incidents(cast: Cast, count: int, rng: random.Random) -> list[Plan]:
    states = list(STATE_MIX)
    weights = list(STATE_MIX.values())
    plans = []
    for n in range(count):
        org = rng.choices(range(ORGANIZATIONS), cast.org_weights)[0]
        by_customer = rng.random() < 0.6
        body = {
            "title": f"{rng.choice(TITLES)} (#{n})",
            "description": "Observed since this morning; affects several subscribers. " * 3,
            "impact": rng.choice(IMPACT_URGENCY),
            "urgency": rng.choice(IMPACT_URGENCY),
            "request_type": rng.choice(REQUEST_TYPES),
            "channel": "portal" if by_customer else rng.choice(CHANNELS),
        }
        if rng.random() < 0.7:
            body["service_id"] = rng.choice(cast.services)
        if rng.random() < 0.01:
            body["major"] = True
            body.pop("impact")
            body.pop("urgency")
        if not by_customer:
            body["organization_id"] = cast.organizations[org]["id"]
            body["group_id"] = rng.choice(cast.groups)
        state = rng.choices(states, weights)[0]
        plans.append(Plan(org, by_customer, body, state, rng.randrange(AGENTS), rng.random() < 0.4))
    return plans


async def _make(client: Client, cast: Cast, plan: Plan) -> None:
    who = client.as_key(cast.customer_keys[plan.org] if plan.by_customer else cast.agents[0][1])
    incident = await who.ok("POST", "/api/v1/incidents", plan.body, 201)
    agent = client.as_key(cast.agents[plan.agent][1])
    customer = client.as_key(cast.customer_keys[plan.org])
    path = f"/api/v1/incidents/{incident['id']}"

    async def move(body: dict[str, Any]) -> None:
        await agent.ok("POST", f"{path}/transitions", body)

    if plan.state == "new":
        return
    if plan.state == "cancelled":
        await move({"to": "cancelled", "reason": "Opened twice by mistake."})
        return
    await move({"to": "in_progress"})
    if plan.comment:
        body = {"body": "We are looking into it; logs requested from the node.", "public": True}
        await agent.ok("POST", f"{path}/comments", body, 201)
    if plan.state == "on_hold":
        if plan.agent % 2:
            await move({"to": "on_hold", "hold_reason": "awaiting_vendor"})
        else:
            await move(
                {"to": "on_hold", "hold_reason": "awaiting_customer",
                 "comment": "Could you send the time and number of a failed call?"}
            )  # fmt: skip
        return
    if plan.state in ("resolved", "closed"):
        await move(
            {"to": "resolved", "resolution_code": "solved",
             "resolution_notes": "Configuration corrected on the switch; verified with test calls."}
        )  # fmt: skip
    if plan.state == "closed":
        if plan.agent % 2:
            await customer.ok("POST", f"{path}/confirm", {"comment": "Works now, thanks."})
        else:
            await move({"to": "closed", "confirmation_note": "Confirmed by phone."})


async def seed_incidents_api(
    client: Client, cast: Cast, count: int, rng: random.Random, concurrency: int = 32
) -> float:
    """Make `count` incidents through the API; returns the seconds it took."""
    plans = plan_incidents(cast, count, rng)
    queue: asyncio.Queue[Plan] = asyncio.Queue()
    for plan in plans:
        queue.put_nowait(plan)
    started = time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            await _make(client, cast, queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


# --- the rest by cloning in SQL -------------------------------------------------------------

# A UUIDv7 for a given instant (ids sort by creation time, as SDMS's do).
UUID7_FUNCTION = """
CREATE FUNCTION pg_temp.uuid7(at timestamptz) RETURNS uuid AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
    substring(int8send((extract(epoch FROM at) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
    52, 1), 53, 1), 'hex')::uuid
$$ LANGUAGE sql VOLATILE
"""

CLONE_MAP = """
CREATE TEMP TABLE clone_map AS
WITH src AS (
  SELECT id, state, row_number() OVER (ORDER BY id) - 1 AS n, count(*) OVER () AS total
  FROM incidents
)
SELECT src.id AS old_id,
  CASE WHEN src.state = 'resolved' THEN random() * interval '4 days'
       ELSE interval '1 day' + random() * interval '364 days' END AS shift
FROM generate_series(0, $1::int - 1) g JOIN src ON src.n = g % src.total
"""

# The tables that hang off an incident (by a foreign key to incidents.id, or journal-style by
# record_id): each is cloned with its incident, whatever SDMS adds over time.
CHILD_TABLES = """
SELECT c.conrelid::regclass::text AS child, a.attname AS column
FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.confrelid = 'incidents'::regclass AND cardinality(c.conkey) = 1
"""

COLUMNS = """
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position
"""

# SLA clocks of a clone lie in the past: what was due then is done (warned, breach notified),
# as in a live desk, so the SLA job does not start working off a year of backlog.
SETTLE_CLOCKS = """
UPDATE sla_clocks SET
  warned = warned OR (warn_at IS NOT NULL AND warn_at <= now()),
  breach_notified = breach_notified OR (breach_at IS NOT NULL AND breach_at <= now()),
  next_check_at = CASE WHEN next_check_at <= now() THEN NULL ELSE next_check_at END
WHERE incident_id IN (SELECT new_id FROM clone_map)
"""

# The change log keeps its order of writing (seq); a clone's rows name the clone's ids.
CLONE_CHANGE_LOG = """
INSERT INTO change_log (tx_id, region, entity, entity_id, entity_version, event, data,
  occurred_at)
SELECT txid_current(), l.region, l.entity, c.new_id, l.entity_version, l.event,
  (l.data::jsonb || jsonb_build_object('id', c.new_id)
    || CASE WHEN l.data::jsonb ? 'number' AND c.number IS NOT NULL
            THEN jsonb_build_object('number', c.number) ELSE '{}'::jsonb END
    || CASE WHEN l.data::jsonb ? 'incident_id'
            THEN jsonb_build_object('incident_id', c.incident_id) ELSE '{}'::jsonb END
    || CASE WHEN l.data::jsonb ? 'record_id'
            THEN jsonb_build_object('record_id', c.incident_id) ELSE '{}'::jsonb END)::json,
  l.occurred_at - c.shift
FROM change_log l JOIN clone_ids c ON l.entity_id = c.old_id
ORDER BY l.occurred_at - c.shift, l.seq
"""


async def _clone_table(conn: Any, table: str, link: str) -> None:
    """Copy the rows of `table` that belong to cloned incidents (`link` names the incident):
    new UUIDv7 ids, the clone's incident id in `link`, timestamps moved back by the shift."""
    columns = await conn.fetch(COLUMNS, table)
    names = [r["column_name"] for r in columns]
    stamps = {r["column_name"] for r in columns if r["data_type"] == "timestamp with time zone"}
    if "id" not in names:
        # Keyed by the incident (one row per incident and kind, say): copy under the clone.
        values = [
            "m.new_id" if n == link else (f"t.{n} - m.shift" if n in stamps else f"t.{n}")
            for n in names
        ]
        await conn.execute(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "
            f"FROM clone_map m JOIN {table} t ON t.{link} = m.old_id"
        )
        return
    anchor = "created_at" if "created_at" in stamps else None
    mapping = f"clone_{table}"
    new_id = f"pg_temp.uuid7(t.{anchor} - m.shift)" if anchor else "pg_temp.uuid7(now())"
    await conn.execute(
        f"CREATE TEMP TABLE {mapping} AS SELECT t.id AS old_id, {new_id} AS new_id, "
        f"m.new_id AS incident_id, m.shift FROM clone_map m JOIN {table} t ON t.{link} = m.old_id"
    )
    await conn.execute(f"CREATE INDEX ON {mapping} (old_id)")
    values = []
    for name in names:
        if name == "id":
            values.append("c.new_id")
        elif name == link:
            values.append("c.incident_id")
        elif name in stamps:
            values.append(f"t.{name} - c.shift")
        else:
            values.append(f"t.{name}")
    order = f"ORDER BY t.{anchor} - c.shift" if anchor else ""
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "
        f"FROM {mapping} c JOIN {table} t ON t.id = c.old_id {order}"
    )
    await conn.execute(
        f"INSERT INTO clone_ids SELECT c.old_id, c.new_id, c.incident_id, c.shift, NULL "
        f"FROM {mapping} c"
    )


async def clone_incidents_sql(dsn: str, count: int, children: tuple[str, ...] = ()) -> float:
    """Add `count` incidents by cloning the API-made ones with everything that hangs off them
    (journal, change log, SLA clocks, escalations...); returns the seconds it took. With
    `children`, only those tables are cloned with the incidents (no journal, no change log)."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(UUID7_FUNCTION)
            await conn.execute(CLONE_MAP, count)
            await conn.execute(
                "ALTER TABLE clone_map ADD COLUMN new_id uuid;"
                "UPDATE clone_map m SET new_id = pg_temp.uuid7(i.created_at - m.shift) "
                "FROM incidents i WHERE i.id = m.old_id;"
                "CREATE INDEX ON clone_map (old_id);"
                "CREATE TEMP TABLE clone_ids (old_id uuid, new_id uuid, incident_id uuid, "
                "shift interval, number text)"
            )
            await _clone_incidents(conn)
            if not children:
                await _clone_table(conn, "journal_entries", "record_id")
            for child in await conn.fetch(CHILD_TABLES):
                if not children or child["child"] in children:
                    await _clone_table(conn, child["child"], child["column"])
            has_clocks = await conn.fetchval("SELECT to_regclass('sla_clocks') IS NOT NULL")
            if has_clocks:
                await conn.execute(SETTLE_CLOCKS)
            if not children:
                await conn.execute("CREATE INDEX ON clone_ids (old_id)")
                await conn.execute(CLONE_CHANGE_LOG)
    finally:
        await conn.close()
    return time.monotonic() - started


async def _clone_incidents(conn: Any) -> None:
    columns = await conn.fetch(COLUMNS, "incidents")
    names = [r["column_name"] for r in columns]
    stamps = {r["column_name"] for r in columns if r["data_type"] == "timestamp with time zone"}
    values = []
    for name in names:
        if name == "id":
            values.append("m.new_id")
        elif name == "number":
            values.append("'INC-MSK-' || lpad(nextval('inc_number_seq')::text, 7, '0')")
        elif name in ("eta_alert_at", "eta_alerted_for"):
            values.append("NULL")  # an ETA watch of the past has fired long ago
        elif name in stamps:
            values.append(f"i.{name} - m.shift")
        else:
            values.append(f"i.{name}")
    await conn.execute(
        f"INSERT INTO incidents ({', '.join(names)}) SELECT {', '.join(values)} "
        "FROM clone_map m JOIN incidents i ON i.id = m.old_id ORDER BY i.created_at - m.shift"
    )
    await conn.execute(
        "INSERT INTO clone_ids SELECT m.old_id, m.new_id, m.new_id, m.shift, i.number "
        "FROM clone_map m JOIN incidents i ON i.id = m.new_id"
    )


async def settle(dsn: str) -> None:
    """What a live database has after a load: statistics, a vacuumed heap, a checkpoint."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
