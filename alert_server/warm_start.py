"""The boundaries of an already migrated database, loaded while the server is still importing.

Why: ``vigie server`` spends most of its start importing the application (FastAPI, the
console, the stages: well over a second of CPU) and then, in ``Runtime.start``, builds the
spatial index from the stored boundaries (reading 35,000 communes' WKB, parsing it, building
the trees: about half a second more). The two do not depend on each other, and the geometry
work mostly runs outside the GIL (SQLite, GEOS), so the second is done in a thread while the
first goes on.

Nothing here changes what a start does or checks, only when part of it runs:

- it only touches a database that is already at every migration head (checked without
  Alembic): a database to migrate is left to ``Runtime.start``, which migrates first as before;
- it does exactly what ``Runtime.start`` would do next (``geo.service.load_from_dir``, which
  stores the kinds of ``VIGIE_GEO_DIR`` not yet imported, then ``current_index``), on the very
  engine the server then uses, whose index cache rebuilds on any newer import;
- ``Runtime.start`` waits for it before doing anything, then does its own steps as before: they
  find the work done. If anything failed here (a bad boundary file…), ``Runtime.start`` meets
  the same failure itself and the server refuses to start with it, as before.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import Engine

from alert_server.db import VERSION_LOCATIONS
from alert_server.geo import service as geo_service
from alert_server.geo.service import ImportSummary
from alert_server.migration_heads import at_heads

log = logging.getLogger(__name__)


class WarmStart:
    """Started right after the configuration is checked; joined by ``Runtime.start``."""

    def __init__(self, engine: Engine, geo_dir: Path | None) -> None:
        self.engine = engine
        self.geo_dir = geo_dir
        # What the import from ``geo_dir`` stored (None: not done here).
        self.summary: ImportSummary | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vigie-warm-start", daemon=True)

    def start(self) -> WarmStart:
        self._thread.start()
        return self

    def wait(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            with self.engine.connect() as conn:
                current = at_heads(conn, VERSION_LOCATIONS)
                conn.rollback()
            if not current:
                return  # migrations first, in Runtime.start
            if self.geo_dir is not None:
                self.summary = geo_service.load_from_dir(self.engine, self.geo_dir)
            geo_service.current_index(self.engine)
        except Exception as exc:
            # Runtime.start does the same steps again and stops on the same error there.
            self.error = exc
            log.debug("warm start left to Runtime.start: %s", exc)
