"""Drop-in rooms: always open, staff on duty shown as such, open hours told plainly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Api, Client, Running, auth, open_client


async def test_staff_on_duty_are_shown_as_such_in_presence(server: Running, api: Api, clients: list[Client]) -> None:
    """A clinician joining on duty appears with on_duty in presence; a patient cannot claim it."""
    clinician, carer = await api.staff("clinician"), await api.signup("caregiver")
    room = await api.room(await api.staff(), name="Night owls")
    cc = await open_client(server, carer)
    clients.append(cc)
    await cc.call("join", room=room)
    assert (await cc.error("join", room=room, on_duty=True))["code"] == "forbidden"
    staff = await open_client(server, clinician)
    clients.append(staff)
    joined = await staff.call("join", room=room, on_duty=True)
    me = next(card for card in joined["presence"] if card["id"] == clinician.member)
    assert me["on_duty"] is True
    arrived = await cc.event("presence", room=room)
    assert arrived["joined"] == [{"id": clinician.member, "name": clinician.name, "role": "clinician", "on_duty": True}]
    assert "on_duty" not in next(c for c in joined["presence"] if c["id"] == carer.member)


async def test_open_hours_are_told_to_everyone_who_joins(server: Running, api: Api, clients: list[Client]) -> None:
    """Inside the hours the notice says the team is here; outside, the room stays open and says so."""
    facilitator, carer = await api.staff(), await api.signup("caregiver")
    room = await api.room(facilitator, name="Caregivers' drop-in")
    now = datetime.now(UTC)
    around = {"tz": "UTC", "days": list(range(7)), "from": (now - timedelta(hours=1)).strftime("%H:%M"),
              "to": (now + timedelta(hours=1)).strftime("%H:%M")}  # fmt: skip
    away = {
        **around,
        "from": (now + timedelta(hours=2)).strftime("%H:%M"),
        "to": (now + timedelta(hours=3)).strftime("%H:%M"),
    }
    client = await open_client(server, carer)
    clients.append(client)
    assert "hours" not in (await client.call("join", room=room))["room"]  # always open by default
    for hours, open_now in ((around, True), (away, False)):
        r = await api.http.patch(f"/api/rooms/{room}", json={"open_hours": hours}, headers=auth(facilitator))
        assert r.status_code == 200 and r.json()["room"]["open_hours"]["from"] == hours["from"]
        told = (await client.call("join", room=room))["room"]["hours"]
        assert told["open"] is open_now and told["tz"] == "UTC"
        assert ("Outside open hours" in told["notice"]) is not open_now
        await client.call("send", room=room, text="anyone?", client_id=f"q{open_now}")  # open for peers either way
    assert (
        await api.http.patch(f"/api/rooms/{room}", json={"open_hours": around}, headers=auth(carer))
    ).status_code == 403
    hours_ok = {"tz": "UTC", "days": [1], "from": "20:00", "to": "22:00"}
    bad = [hours_ok | {"tz": "Mars/Olympus"}, hours_ok | {"days": [7]}, hours_ok | {"from": "25:00"},
           {"tz": "UTC", "days": [1]}, "always"]  # fmt: skip
    for hours in bad:
        r = await api.http.patch(f"/api/rooms/{room}", json={"open_hours": hours}, headers=auth(facilitator))
        assert r.status_code == 400, hours
    r = await api.http.patch(f"/api/rooms/{room}", json={"open_hours": None}, headers=auth(facilitator))
    assert r.status_code == 200 and "hours" not in (await client.call("join", room=room))["room"]
