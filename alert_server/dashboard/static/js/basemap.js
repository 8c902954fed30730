/* Vigie — the maps' background (alert page and fleet map).

   With network: the street tiles of VIGIE_MAP_TILE_URL (IGN's Plan IGN by default). Without
   (a demo on a laptop, a closed firewall) or with VIGIE_MAP_TILE_URL=none: the outlines of the
   départements and of the communes in view, with the communes' names on hover, served by
   Vigie itself from the boundaries it loaded. The map says which background it shows
   (data-basemap="tiles" | "outlines"), and says so in French when the tiles cannot be loaded.
   Text is set with textContent. */
(function () {
  "use strict";

  var Vigie = window.Vigie;
  var L = window.L;
  if (!Vigie || !L) return;

  var COMMUNES_MIN_ZOOM = 10;
  // Failed tiles before the first one loaded: the tile server is out of reach.
  var ERRORS_BEFORE_FALLBACK = 2;

  // opts: tileUrl, tileAttribution, communesUrl, onFallback(reason)
  Vigie.basemap = function (map, el, opts) {
    var pane = map.createPane("communes");
    pane.style.zIndex = "350"; // above the tiles, below the alert's marks (overlay: 400)
    var communes = L.geoJSON(null, {
      pane: "communes",
      style: function () {
        return { color: "#607d8b", weight: 1, opacity: 0.8, fill: true, fillOpacity: 0.02, fillColor: "#607d8b" };
      },
      onEachFeature: function (feature, layer) {
        layer.bindTooltip(feature.properties.nom, { sticky: true, className: "commune-label" });
      },
    });
    var outlines = false;
    var asked = 0;
    var lastBbox = "";

    function loadCommunes() {
      if (!outlines || !opts.communesUrl) return;
      if (map.getZoom() < COMMUNES_MIN_ZOOM) {
        communes.clearLayers();
        lastBbox = "";
        el.dataset.communes = "0";
        return;
      }
      var b = map.getBounds().pad(0.25);
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]
        .map(function (v) {
          return v.toFixed(3);
        })
        .join(",");
      if (bbox === lastBbox) return;
      lastBbox = bbox;
      var mine = ++asked;
      fetch(opts.communesUrl + "?bbox=" + encodeURIComponent(bbox), { cache: "default" })
        .then(function (resp) {
          return resp.ok ? resp.json() : null;
        })
        .then(function (geojson) {
          if (!geojson || mine !== asked) return;
          communes.clearLayers();
          communes.addData(geojson);
          el.dataset.communes = String(geojson.features.length);
        })
        .catch(function () {
          el.dataset.communes = "error";
        });
    }

    function showOutlines(reason) {
      if (outlines) return;
      outlines = true;
      el.dataset.basemap = "outlines";
      communes.addTo(map);
      map.attributionControl.addAttribution("Fond : contours (Vigie)");
      if (reason === "unreachable") {
        var Note = L.Control.extend({
          onAdd: function () {
            var div = L.DomUtil.create("div", "map-note");
            div.setAttribute("role", "status");
            div.textContent = "Fond de carte injoignable : contours des communes, nom au survol.";
            return div;
          },
        });
        new Note({ position: "bottomleft" }).addTo(map);
      }
      if (opts.onFallback) opts.onFallback(reason);
      loadCommunes();
    }

    map.on("moveend", loadCommunes);
    if (opts.tileUrl) {
      el.dataset.basemap = "loading";
      var loaded = false;
      var errors = 0;
      var tiles = L.tileLayer(opts.tileUrl, { maxZoom: 19, attribution: opts.tileAttribution || "" });
      tiles.on("tileload", function () {
        if (loaded || outlines) return;
        loaded = true;
        el.dataset.basemap = "tiles";
      });
      tiles.on("tileerror", function () {
        if (loaded || outlines) return;
        errors++;
        if (errors >= ERRORS_BEFORE_FALLBACK) {
          map.removeLayer(tiles);
          showOutlines("unreachable");
        }
      });
      tiles.addTo(map);
    } else {
      showOutlines("none");
    }
    return {
      communes: communes,
      get outlines() {
        return outlines;
      },
    };
  };
})();
