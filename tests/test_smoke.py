from tests.factories import World, ok


async def test_incident_round_trip(world: World) -> None:
    incident = await world.incident()
    assert incident["number"] == "INC-MSK-0000001"
    got = ok(await world.agent.get(f"/incidents/{incident['number']}"), 200)
    assert got["id"] == incident["id"]
    moved = await world.move(incident, "in_progress")
    assert moved["state"] == "in_progress"
