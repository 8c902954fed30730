"""A fake of the national address service's reverse geocoding (Géoplateforme / BAN
``/reverse``): same parameters, same GeoJSON shape, answers from a small table of known
points, and counts the requests it receives (to check the console's cache)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

KNOWN = {
    (43.2965, 5.3698): ("2 Quai du Port 13002 Marseille", 8.0),
    (43.2140, 5.5380): ("1 Place Baragnon 13260 Cassis", 12.0),
}


def make_app() -> tuple[FastAPI, list[dict[str, Any]]]:
    app = FastAPI()
    calls: list[dict[str, Any]] = []

    @app.get("/reverse")
    def reverse(
        lat: float = Query(), lon: float = Query(), limit: int = 1, index: str = "address"
    ) -> dict[str, Any]:
        calls.append({"lat": lat, "lon": lon, "limit": limit, "index": index})
        features = []
        for (klat, klon), (label, distance) in KNOWN.items():
            if abs(klat - lat) < 0.001 and abs(klon - lon) < 0.001:
                features.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [klon, klat]},
                        "properties": {"label": label, "distance": distance, "score": 0.99},
                    }
                )
        return {"type": "FeatureCollection", "features": features[:limit]}

    return app, calls
