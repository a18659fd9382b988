"""Scheduled sessions over HTTP: local times across DST, exceptions, capacity, permissions, .ics."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import icalendar
import pytest

from server.settings import normalise_db_url
from server.store.schedule import SqlSchedule
from tests.conftest import Account, Api, Running, auth, serving, test_settings

WEEKLY_THURSDAY = {"title": "Thursday circle", "tz": "Europe/London", "duration_minutes": 60}


async def group(api: Api, members: int = 1) -> tuple[Account, str, list[Account]]:
    """A facilitator, their group room, and `members` patients in it."""
    staff = await api.staff()
    room = await api.room(staff, kind="group")
    people = [await api.signup() for _ in range(members)]
    for person in people:
        assert (await api.add_member(staff, room, person)).status_code == 201
    return staff, room, people


async def create(api: Api, staff: Account, room: str, **fields: Any) -> dict[str, Any]:
    r = await api.http.post(f"/api/rooms/{room}/sessions", json=fields, headers=auth(staff))
    assert r.status_code == 201, r.text
    session: dict[str, Any] = r.json()["session"]
    return session


async def occurrences(api: Api, who: Account, session: str, start: str, end: str) -> list[dict[str, Any]]:
    r = await api.http.get(f"/api/sessions/{session}/occurrences", params={"from": start, "to": end}, headers=auth(who))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["occurrences"]
    return found


def occurrence_url(session: str, key: str, action: str) -> str:
    return f"/api/sessions/{session}/occurrences/{key}/{action}"


def events(ics: bytes) -> dict[str, icalendar.Event]:
    """The VEVENTs of a feed by UID, after checking it parses back."""
    calendar = icalendar.Calendar.from_ical(ics)
    return {str(e["uid"]): e for e in calendar.walk("VEVENT")}


async def test_a_weekly_london_session_stays_at_seven_pm_local_across_the_spring_change(
    server: Running, api: Api
) -> None:
    """Weekly at 19:00 Europe/London is 19:00Z before 2027-03-28 and 18:00Z after, 19:00 local both times."""
    staff, room, [member] = await group(api)
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-03-25T19:00", rrule="FREQ=WEEKLY;BYDAY=TH")
    found = await occurrences(api, member, session["id"], "2027-03-20T00:00:00Z", "2027-04-05T00:00:00Z")
    assert [(o["start"], o["local_start"]) for o in found] == [
        ("2027-03-25T19:00:00Z", "2027-03-25T19:00"),
        ("2027-04-01T18:00:00Z", "2027-04-01T19:00"),
    ]
    assert [o["key"] for o in found] == [o["start"] for o in found]
    assert found[0]["end"] == "2027-03-25T20:00:00Z" and found[0]["tz"] == "Europe/London"
    assert found[0]["my_status"] is None and found[0]["registered"] == 0 and found[0]["cancelled"] is False


async def test_a_new_york_session_stays_at_local_time_across_the_november_change(server: Running, api: Api) -> None:
    """Weekly at 18:30 America/New_York is 22:30Z in EDT and 23:30Z after 2026-11-01 in EST."""
    staff, room, [member] = await group(api)
    session = await create(
        api, staff, room, title="Evening", tz="America/New_York", duration_minutes=90,
        start="2026-10-29T18:30", rrule="FREQ=WEEKLY;BYDAY=TH",
    )  # fmt: skip
    found = await occurrences(api, member, session["id"], "2026-10-25T00:00:00Z", "2026-11-10T00:00:00Z")
    assert [o["start"] for o in found] == ["2026-10-29T22:30:00Z", "2026-11-05T23:30:00Z"]
    assert {o["local_start"][11:] for o in found} == {"18:30"}


async def test_a_cancelled_occurrence_is_listed_refuses_registration_and_is_cancelled_in_the_ics(
    server: Running, api: Api
) -> None:
    """A cancelled occurrence stays listed as cancelled, takes no registration, and is STATUS:CANCELLED."""
    staff, room, [member] = await group(api)
    session = await create(
        api, staff, room, **WEEKLY_THURSDAY, start="2027-01-07T19:00", rrule="FREQ=WEEKLY;COUNT=4",
        description="Bring a cup of tea; we start on time.\nAll welcome.",
    )  # fmt: skip
    key = "2027-01-14T19:00:00Z"
    r = await api.http.post(occurrence_url(session["id"], key, "cancel"), json={"reason": "Snow"}, headers=auth(staff))
    assert r.status_code == 200, r.text
    assert r.json()["occurrence"]["cancelled"] is True and r.json()["occurrence"]["reason"] == "Snow"
    found = await occurrences(api, member, session["id"], "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z")
    assert [(o["key"], o["cancelled"]) for o in found] == [
        ("2027-01-07T19:00:00Z", False),
        (key, True),
        ("2027-01-21T19:00:00Z", False),
        ("2027-01-28T19:00:00Z", False),
    ]
    r = await api.http.post(occurrence_url(session["id"], key, "registration"), headers=auth(member))
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"

    r = await api.http.get(f"/api/rooms/{room}/calendar.ics", headers=auth(member))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    assert b"\r\n" in r.content and all(len(line) <= 75 for line in r.content.split(b"\r\n"))
    by_uid = events(r.content)
    assert len(by_uid) == 4
    cancelled = by_uid[f"{session['id']}-20270114T190000Z@hearth"]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled.decoded("dtstart") == datetime(2027, 1, 14, 19, 0, tzinfo=UTC)
    assert cancelled["dtstart"].params["TZID"] == "Europe/London"
    assert str(cancelled["description"]) == "Bring a cup of tea; we start on time.\nAll welcome."
    assert {str(e["status"]) for uid, e in by_uid.items() if e is not cancelled} == {"CONFIRMED"}
    assert b"BEGIN:VTIMEZONE" in r.content and b"TZID:Europe/London" in r.content


async def test_a_moved_occurrence_keeps_its_key_and_gets_its_new_start(server: Running, api: Api) -> None:
    """Moving an occurrence changes its start, not its key, and keeps who registered for it."""
    staff, room, [member] = await group(api)
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-01-07T19:00", rrule="FREQ=WEEKLY")
    key = "2027-01-21T19:00:00Z"
    r = await api.http.post(occurrence_url(session["id"], key, "registration"), headers=auth(member))
    assert r.status_code == 201 and r.json() == {"status": "registered"}
    r = await api.http.post(
        occurrence_url(session["id"], key, "move"), json={"start": "2027-01-22T10:00"}, headers=auth(staff)
    )
    assert r.status_code == 200, r.text
    moved = r.json()["occurrence"]
    assert (moved["key"], moved["start"], moved["local_start"], moved["moved"]) == (
        key, "2027-01-22T10:00:00Z", "2027-01-22T10:00", True,
    )  # fmt: skip
    found = await occurrences(api, member, session["id"], "2027-01-20T00:00:00Z", "2027-01-29T00:00:00Z")
    assert [(o["key"], o["start"], o["my_status"]) for o in found] == [
        (key, "2027-01-22T10:00:00Z", "registered"),
        ("2027-01-28T19:00:00Z", "2027-01-28T19:00:00Z", None),
    ]
    # Moved out of a window, it is no longer in it; moved into one, it is.
    assert [o["key"] for o in await occurrences(api, member, session["id"], key, "2027-01-22T00:00:00Z")] == []
    r = await api.http.post(
        occurrence_url(session["id"], "2027-01-21T18:00:00Z", "move"), json={"start": "2027-01-22T10:00"},
        headers=auth(staff),
    )  # fmt: skip
    assert r.status_code == 404  # not an occurrence of this session


async def test_a_full_occurrence_waitlists_and_promotes_the_first_waiting_when_a_place_frees(
    server: Running, api: Api
) -> None:
    """Capacity 2: the third is waitlisted; when the first cancels, the third takes the place."""
    staff, room, people = await group(api, 4)
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-02-04T19:00", capacity=2)
    key = "2027-02-04T19:00:00Z"
    url = occurrence_url(session["id"], key, "registration")
    answers = [await api.http.post(url, headers=auth(p)) for p in people]
    assert [a.json() for a in answers] == [
        {"status": "registered"},
        {"status": "registered"},
        {"status": "waitlisted", "position": 1},
        {"status": "waitlisted", "position": 2},
    ]
    again = await api.http.post(url, headers=auth(people[2]))
    assert again.status_code == 200 and again.json() == {"status": "waitlisted", "position": 1}
    assert (await api.http.delete(url, headers=auth(people[0]))).status_code == 200
    [third] = await occurrences(api, people[2], session["id"], key, "2027-02-05T00:00:00Z")
    assert (third["my_status"], third["registered"], third["waitlisted"]) == ("registered", 2, 1)
    assert (await api.http.post(url, headers=auth(people[3]))).json() == {"status": "waitlisted", "position": 1}
    # A larger capacity promotes the waitlist at once.
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"capacity": 3}, headers=auth(staff))
    assert r.status_code == 200 and r.json()["session"]["capacity"] == 3
    [fourth] = await occurrences(api, people[3], session["id"], key, "2027-02-05T00:00:00Z")
    assert (fourth["my_status"], fourth["registered"], fourth["waitlisted"]) == ("registered", 3, 0)


async def test_ten_concurrent_registrations_for_three_places_register_exactly_three(server: Running, api: Api) -> None:
    """Registrations racing for the last places never overfill an occurrence."""
    await register_ten_for_three(api)


async def register_ten_for_three(api: Api) -> None:
    staff, room, people = await group(api, 10)
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-02-11T19:00", capacity=3)
    key = "2027-02-11T19:00:00Z"
    url = occurrence_url(session["id"], key, "registration")
    answers = await asyncio.gather(*(api.http.post(url, headers=auth(p)) for p in people))
    assert {a.status_code for a in answers} == {201}
    statuses = [a.json()["status"] for a in answers]
    assert statuses.count("registered") == 3 and statuses.count("waitlisted") == 7
    assert sorted(a.json()["position"] for a in answers if "position" in a.json()) == list(range(1, 8))
    [listed] = await occurrences(api, staff, session["id"], key, "2027-02-12T00:00:00Z")
    assert (listed["registered"], listed["waitlisted"]) == (3, 7)


async def test_who_may_schedule_see_and_register_is_checked(server: Running, api: Api) -> None:
    """Patients cannot schedule; outsiders cannot see or register; other rooms' facilitators cannot patch."""
    staff, room, [member] = await group(api)
    other_staff, _, _ = await group(api, 0)
    outsider = await api.signup()
    r = await api.http.post(
        f"/api/rooms/{room}/sessions", json={**WEEKLY_THURSDAY, "start": "2027-05-06T19:00"}, headers=auth(member)
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-05-06T19:00", rrule="FREQ=WEEKLY")
    assert session["facilitators"] == [staff.member]  # member ids of the room's community
    key = "2027-05-06T18:00:00Z"
    for method, url in (
        ("GET", f"/api/rooms/{room}/sessions"),
        ("GET", f"/api/sessions/{session['id']}/occurrences"),
        ("GET", f"/api/rooms/{room}/calendar.ics"),
        ("POST", occurrence_url(session["id"], key, "registration")),
    ):
        r = await api.http.request(method, url, headers=auth(outsider))
        assert r.status_code == 403, (method, url, r.text)
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"title": "Mine now"}, headers=auth(other_staff))
    assert r.status_code == 403
    r = await api.http.post(occurrence_url(session["id"], key, "cancel"), headers=auth(member))
    assert r.status_code == 403
    r = await api.http.get(f"/api/rooms/{room}/sessions", headers=auth(member))
    assert r.status_code == 200 and [s["id"] for s in r.json()["sessions"]] == [session["id"]]
    assert (await api.http.get(f"/api/rooms/{room}/sessions")).status_code == 401
    # A clinician of the room can be made co-facilitator, and may then change the session.
    clinician = await api.staff("clinician")
    r = await api.http.patch(
        f"/api/sessions/{session['id']}", json={"co_facilitators": [clinician.member]}, headers=auth(staff)
    )
    assert r.status_code == 400  # not yet a member of the room
    assert (await api.add_member(staff, room, clinician)).status_code == 201
    r = await api.http.patch(
        f"/api/sessions/{session['id']}", json={"co_facilitators": [clinician.member, member.member]},
        headers=auth(staff),
    )  # fmt: skip
    assert r.status_code == 400  # a patient cannot co-facilitate
    r = await api.http.patch(
        f"/api/sessions/{session['id']}", json={"co_facilitators": [clinician.id]}, headers=auth(staff)
    )
    assert r.status_code == 400  # an account id is no member id
    r = await api.http.patch(
        f"/api/sessions/{session['id']}", json={"co_facilitators": [clinician.member]}, headers=auth(staff)
    )
    assert r.status_code == 200 and r.json()["session"]["facilitators"] == [staff.member, clinician.member]
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"title": "Renamed"}, headers=auth(clinician))
    assert r.status_code == 200 and r.json()["session"]["title"] == "Renamed"
    drop_in = await api.room(other_staff, kind="drop_in")
    r = await api.http.post(
        f"/api/rooms/{drop_in}/sessions", json={**WEEKLY_THURSDAY, "start": "2027-05-06T19:00"},
        headers=auth(await api.staff("admin")),
    )  # fmt: skip
    assert r.status_code == 400


async def test_bad_session_input_gets_bad_request(server: Running, api: Api) -> None:
    """Unknown zones, bad or DTSTART-carrying rules, out-of-range numbers and long windows get 400."""
    staff, room, [member] = await group(api)
    good = {**WEEKLY_THURSDAY, "start": "2027-06-03T19:00"}
    bad = [
        {"tz": "Europe/Atlantis"},
        {"tz": "localtime"},
        {"rrule": "FREQ=SOMETIMES"},
        {"rrule": "not a rule"},
        {"rrule": "DTSTART=20270603T190000;FREQ=WEEKLY"},
        {"rrule": "FREQ=YEARLY"},
        {"rrule": "FREQ=WEEKLY;BYHOUR=9"},
        {"rrule": "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31", "start": "2027-02-03T19:00"},  # never occurs
        {"rrule": "FREQ=WEEKLY;COUNT=2;UNTIL=20271231"},
        {"duration_minutes": 0},
        {"duration_minutes": 601},
        {"duration_minutes": "60"},
        {"capacity": 0},
        {"lobby_minutes": 61},
        {"reminder_minutes": -1},
        {"auto_admit": "yes"},
        {"start": "2027-06-03 19:00"},
        {"start": "2027-02-30T19:00"},
        {"title": ""},
        {"duration": 60},
    ]
    for change in bad:
        r = await api.http.post(f"/api/rooms/{room}/sessions", json={**good, **change}, headers=auth(staff))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", (change, r.text)
    r = await api.http.post(f"/api/rooms/{room}/sessions", json={**good, "title": "x" * 121}, headers=auth(staff))
    assert r.status_code == 413
    session = await create(api, staff, room, **good, rrule="FREQ=WEEKLY")
    for params in (
        {"from": "2027-01-01T00:00:00Z", "to": "2028-01-03T00:00:00Z"},  # over 366 days
        {"from": "2027-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"from": "2027-01-01T00:00:00"},  # no zone
        {"from": "yesterday"},
    ):
        r = await api.http.get(f"/api/sessions/{session['id']}/occurrences", params=params, headers=auth(member))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", params
    r = await api.http.post(occurrence_url(session["id"], "2027-06-03T19:00", "registration"), headers=auth(member))
    assert r.status_code == 400
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"rrule": "FREQ=HOURLY"}, headers=auth(staff))
    assert r.status_code == 400
    r = await api.http.get(  # `to` defaults to 60 days after `from`
        f"/api/sessions/{session['id']}/occurrences", params={"from": "2027-06-01T00:00:00Z"}, headers=auth(member)
    )
    assert r.status_code == 200 and [o["start"][:10] for o in r.json()["occurrences"]][::4] == [
        "2027-06-03", "2027-07-01", "2027-07-29",
    ]  # fmt: skip


async def test_the_calendar_token_opens_the_feed_without_a_header_and_is_refused_when_tampered(
    server: Running, api: Api
) -> None:
    """The feed URL works with no header, only for that feed, and not once altered."""
    staff, room, [member] = await group(api)
    session = await create(api, staff, room, **WEEKLY_THURSDAY, start="2027-03-04T19:00", rrule="FREQ=WEEKLY")
    for key in ("2027-03-04T19:00:00Z", "2027-03-11T19:00:00Z"):
        r = await api.http.post(occurrence_url(session["id"], key, "registration"), headers=auth(member))
        assert r.status_code == 201
    mine = await api.http.get("/api/me/calendar.ics", headers=auth(member))
    assert mine.status_code == 200
    expected = {f"{session['id']}-20270304T190000Z@hearth", f"{session['id']}-20270311T190000Z@hearth"}
    assert set(events(mine.content)) == expected

    r = await api.http.get("/api/me/calendar-token", headers=auth(member))
    url = r.json()["url"]
    assert url.startswith("/api/calendar/") and url.endswith(".ics")
    async with httpx.AsyncClient(base_url=server.http_url) as bare:
        feed = await bare.get(url)
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
        assert set(events(feed.content)) == expected
        token = url.removeprefix("/api/calendar/").removesuffix(".ics")
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        for bad in (f"/api/calendar/{tampered}.ics", f"/api/calendar/{member.token}.ics", "/api/calendar/x.ics"):
            r = await bare.get(bad)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", bad
        other = (await api.http.get("/api/me/calendar-token", headers=auth(staff))).json()["url"]
        assert set(events((await bare.get(other)).content)) == set()  # the facilitator registered for nothing
        r = await bare.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401  # the feed token signs nobody in


async def test_the_access_log_never_shows_a_calendar_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A feed's access-log line names the route's template, `/api/calendar/{token}.ics`, never the token."""
    caplog.set_level(logging.INFO)
    async with serving(test_settings(tmp_path)) as (running, api):
        member = await api.signup()
        url = (await api.http.get("/api/me/calendar-token", headers=auth(member))).json()["url"]
        token = url.removeprefix("/api/calendar/").removesuffix(".ics")
        async with httpx.AsyncClient(base_url=running.http_url) as bare:
            assert (await bare.get(url)).status_code == 200
            tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
            assert (await bare.get(f"/api/calendar/{tampered}.ics")).status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name in ("hearth.access", "uvicorn.access")]
    feed = [line for line in lines if line.startswith("GET /api/calendar/")]
    assert [line.split()[:3] for line in feed] == [
        ["GET", "/api/calendar/{token}.ics", "200"],
        ["GET", "/api/calendar/{token}.ics", "401"],
    ], lines
    server_side = ("hearth", "uvicorn", "starlette")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(server_side))
    assert token not in logged and token.split(".")[2] not in logged


async def test_the_scheduler_sees_every_rooms_occurrences_with_their_facilitators(server: Running, api: Api) -> None:
    """`occurrences_between` spans rooms; `occurrence` and `registered` answer for one occurrence."""
    staff, room, [member, waiting] = await group(api, 2)
    other_staff, other_room, _ = await group(api, 0)
    clinician = await api.staff("clinician")
    assert (await api.add_member(staff, room, clinician)).status_code == 201
    day = (datetime.now(UTC) + timedelta(days=60)).replace(hour=0, minute=0, second=0, microsecond=0)
    at = {**WEEKLY_THURSDAY, "tz": "UTC"}  # within the 366 days that registration reaches
    one = await create(
        api, staff, room, **at, start=f"{day:%Y-%m-%d}T19:00", capacity=1, agreement="What is said here stays.",
        lobby_minutes=5, reminder_minutes=60, auto_admit=True, co_facilitators=[clinician.member],
    )  # fmt: skip
    two = await create(api, other_staff, other_room, **at, start=f"{day:%Y-%m-%d}T20:00")
    key = f"{day:%Y-%m-%d}T19:00:00Z"
    for person in (member, waiting):
        await api.http.post(occurrence_url(one["id"], key, "registration"), headers=auth(person))
    schedule = SqlSchedule(server.hub.store.engines)
    found = await schedule.occurrences_between(day, day + timedelta(days=1))
    mine = [o for o in found if o.session in (one["id"], two["id"])]
    assert [(o.session, o.room) for o in mine] == [(one["id"], room), (two["id"], other_room)]
    first = mine[0]
    assert first.facilitators == (staff.id, clinician.id)  # the store keeps accounts
    assert first.agreement == "What is said here stays."
    assert (first.lobby_minutes, first.reminder_minutes, first.auto_admit, first.capacity) == (5, 60, True, 1)
    assert first.start == first.key == day.replace(hour=19) and not first.cancelled
    assert await schedule.occurrence(one["id"], first.key) == first
    assert await schedule.occurrence(one["id"], day.replace(hour=18)) is None
    assert await schedule.registered(one["id"], first.key) == [member.id]


async def test_capacity_holds_under_concurrent_registrations_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """On PostgreSQL too, ten racing registrations for three places register exactly three."""
    settings = test_settings(tmp_path).with_(database_url=normalise_db_url(postgres_url))
    async with serving(settings) as (running, api):
        await register_ten_for_three(api)
