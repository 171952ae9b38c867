"""Properties of GET /alerts against the seeded world: any from/to window returns exactly the
alerts an independent oracle puts in it, newest first, across pages of any size; whatever the
query string holds, the answer is a 200 or a 400, never a 500."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alerts.api.parameters import encode_next
from tests.alerts.test_api import (  # noqa: F401 - fixtures
    OTHER, PUBLIC_FIELDS, THING, api_event, aws, call, ids, world,
)

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FORGED_ID = "2023-11-15T06:00:00.000Z#000000000000"  # well-formed, not an alert: a valid start point
ZONES = [timezone.utc, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)),
         timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-9, minutes=-30))]


def instant(alert_id: str) -> datetime:
    return datetime.fromisoformat(alert_id.split("#")[0].replace("Z", "+00:00"))


def moments(seeded: list[datetime]):
    """Mostly near the seeded alerts (exactly on them, a microsecond or millisecond either side),
    sometimes anywhere in the seeded days, in various zones."""
    nudges = st.sampled_from([0, 1, -1, 999, -999, 1000, -1000, 1001, -1001])
    near = st.builds(lambda at, us, zone: (at + timedelta(microseconds=us)).astimezone(zone),
                     st.sampled_from(seeded), nudges, st.sampled_from(ZONES))
    anywhere = st.datetimes(min_value=datetime(2023, 11, 11), max_value=datetime(2023, 11, 16),
                            timezones=st.sampled_from(ZONES))
    return near | anywhere


def test_windows_and_pages_match_the_oracle(aws, context):
    everything = ids(aws)
    seeded = sorted({instant(alert_id) for alert_id in everything})

    @SETTINGS
    @given(start=st.none() | moments(seeded), end=st.none() | moments(seeded),
           limit=st.none() | st.integers(1, 8))
    @example(start=seeded[1], end=seeded[-2], limit=3)
    def check(start, end, limit):
        query = {"thing": THING}
        if start is not None:
            query["from"] = start.isoformat()
        if end is not None:
            query["to"] = end.isoformat()
        if limit is not None:
            query["limit"] = str(limit)
        expected = [alert_id for alert_id in everything
                    if (start is None or instant(alert_id) >= start)
                    and (end is None or instant(alert_id) <= end)]

        got, token, pages = [], None, 0
        while True:
            status, _, body = call(api_event(query={**query, **({"next": token} if token else {})}), context)
            if start is not None and end is not None and start > end:
                assert status == 400
                return
            assert status == 200, body
            assert all(set(item) == PUBLIC_FIELDS and item["thing"] == THING for item in body["items"])
            got += [item["id"] for item in body["items"]]
            pages += 1
            token = body["next"]
            if token is None:
                break
        assert got == expected
        assert pages == max(1, -(-len(expected) // (limit or 50)))

    check()


def test_arbitrary_query_strings_are_200_or_400(aws, context):
    names = st.sampled_from(["thing", "from", "to", "limit", "next"]) | st.text(max_size=8)
    values = (st.sampled_from([THING, OTHER, "2023-11-14T00:00:00Z", "3", "100", ""])
              | st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9_-]{0,200}", fullmatch=True))

    @SETTINGS
    @given(query=st.dictionaries(names, values, max_size=6))
    @example(query={"thing": THING, "next": encode_next({"thing": THING, "alert_id": FORGED_ID})})
    def check(query):
        status, headers, body = call(api_event(query=query), context)
        assert status in (200, 400), body
        assert headers["Cache-Control"] == "no-store"
        if status == 200:
            assert set(query) <= {"thing", "from", "to", "limit", "next"}
            assert all(item["thing"] == query["thing"] for item in body["items"])

    check()
