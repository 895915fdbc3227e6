#!/usr/bin/env python3
"""The oracle for the CalDAV adapter's expansion: Python's `icalendar` and
`recurring-ical-events` (pinned in tests/python/requirements.txt) read
iCalendar files and list their instances in a window.

Usage: expand.py START END FILE.ics [FILE.ics ...]

START and END are UTC instants (2026-01-01T00:00:00Z). Prints one JSON
object mapping each FILE to its instances (sorted), or to {"error": ...}
when the oracle cannot read it. An instance is
  {"start": S, "end": E, "rid": R, "summary": T, "status": U}
where S, E and R are "YYYY-MM-DD" for dates and "YYYY-MM-DDTHH:MM:SSZ"
(UTC) for date-times; floating date-times are read as UTC, as the adapter
reads them when the calendar names no zone.
"""

import datetime
import json
import sys

import icalendar
import recurring_ical_events

UTC = datetime.timezone.utc


def stamp(value):
    """A date or date-time value as the adapter's tests compare it."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.strftime("%Y-%m-%d")


def instances(path, start, end):
    with open(path, "rb") as f:
        cal = icalendar.Calendar.from_ical(f.read())
    out = []
    for e in recurring_ical_events.of(cal).between(start, end):
        dtstart = e.get("DTSTART").dt
        dtend = e.get("DTEND").dt if e.get("DTEND") is not None else None
        if dtend is None and e.get("DURATION") is not None:
            dtend = dtstart + e.get("DURATION").dt
        rid = e.get("RECURRENCE-ID")
        out.append(
            {
                "start": stamp(dtstart),
                "end": stamp(dtend),
                "rid": stamp(rid.dt) if rid is not None else None,
                "summary": str(e.get("SUMMARY", "")),
                "status": str(e.get("STATUS", "")).upper(),
            }
        )
    out.sort(key=lambda i: (i["start"], i["end"] or "", i["summary"]))
    return out


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    parse = lambda s: datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )
    start, end = parse(argv[1]), parse(argv[2])
    result = {}
    for path in argv[3:]:
        try:
            result[path] = instances(path, start, end)
        except Exception as e:  # the oracle's own failure is data, not a crash
            result[path] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
