"""A small per-app cache of a course's learner rows and their sort orders, keyed by when the
course last changed.

Why: teachers sort and page through the same course many times between two new recordings.
`course_rows` reads the worker-kept summary plus a count over the course's submissions (tens of
milliseconds for 2,000 learners and 50,000 recordings), and each sort order of 2,000 rows is
Python work; both are done once per course version. Each request still asks the database when the
course last changed (`course_version`, an index probe per tenant) and recomputes on any change;
entries also expire after MAX_AGE so a missed change (a clock-skewed writer) is bounded. Paging
and sparklines stay per request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session

from db import teacher_views as tv

MAX_AGE_S = 60.0
MAX_ENTRIES = 128


class CourseRowsCache:
    def __init__(self, max_age_s: float = MAX_AGE_S, max_entries: int = MAX_ENTRIES) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def course(self, session: Session, course_id: str, *, tenant_id: uuid.UUID | None) -> _Entry:
        """The course's rows (shared, read-only) and their sorted orders, current as of this request."""
        key = (course_id, str(tenant_id))
        version = tv.course_version(session, course_id, tenant_id=tenant_id)
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found.version == version and now - found.at < self.max_age_s:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
        entry = _Entry(version, now, tv.course_rows(session, course_id, tenant_id=tenant_id))
        with self._lock:
            self.misses += 1
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry


class _Entry:
    """One course's rows at one version, with each sort order computed once."""

    def __init__(self, version: Any, at: float, rows: list[tv.LearnerRow]) -> None:
        self.version = version
        self.at = at
        self.rows = rows
        self.flagged = sorted((r for r in rows if r.falling), key=lambda r: (r.learner_id, str(r.tenant_id)))
        self._orders: dict[tuple[str, bool], list[tv.LearnerRow]] = {}

    def ordered(self, key: str, descending: bool) -> list[tv.LearnerRow]:
        found = self._orders.get((key, descending))
        if found is None:
            found = self._orders[(key, descending)] = tv.sort_rows(self.rows, key, descending)
        return found
