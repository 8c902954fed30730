"""Geolocation: boundary import, spatial index, position resolution.

Flow: a position (fix, Wi-Fi/cell, registered site, last known) → commune → département →
police or gendarmerie zone. Routing is done on polygons only, never on the nearest town (see
``../shared/geo/README.md``: nearest-town methods are wrong for ~40 % of points within 1 km of a
département border).
"""

from __future__ import annotations

# Shown wherever boundary data is displayed (Licence Ouverte requires it).
ATTRIBUTION = "IGN – ADMIN EXPRESS COG 2018 / INSEE COG 2018"

__all__ = ["ATTRIBUTION"]
