/* Vigie — alert detail: live status and timeline, and the map (Leaflet). The street tiles
   (Plan IGN by default) are the background when they can be loaded; otherwise the outlines of
   départements and communes served by Vigie itself (basemap.js). */
(function () {
  "use strict";

  var Vigie = window.Vigie;
  var detail = document.getElementById("detail");
  if (!detail) return;
  var alertId = detail.dataset.alertId;

  // ---- live refresh of the parts that change (the resolve form is left alone, so a note
  // being typed is never wiped) ---------------------------------------------------------
  var pending = false;
  var onMapData = null;

  function refresh() {
    if (pending) return;
    pending = true;
    fetch(detail.dataset.liveUrl, { cache: "no-store" })
      .then(function (resp) {
        return resp.ok ? resp.text() : null;
      })
      .then(function (html) {
        pending = false;
        if (!html) return;
        var t = document.createElement("template");
        t.innerHTML = html;
        var parts = t.content.querySelectorAll("[data-live]");
        for (var i = 0; i < parts.length; i++) {
          var current = document.getElementById(parts[i].id);
          if (current) current.replaceWith(parts[i]);
        }
        var status = document.getElementById("alert-status");
        if (status) detail.dataset.state = status.dataset.state;
        showAddress();
        if (onMapData) onMapData();
      })
      .catch(function () {
        pending = false;
      });
  }

  // ---- the address (reverse geocoding, asked after the page is shown: nothing waits) ----
  var address = null;

  function showAddress() {
    var el = document.getElementById("where-address");
    if (el && address) el.textContent = address;
  }

  function askAddress() {
    var el = document.getElementById("where-address");
    if (!el || !el.dataset.lat) return;
    var url =
      Vigie.prefix +
      "/geo/address?lat=" +
      encodeURIComponent(el.dataset.lat) +
      "&lon=" +
      encodeURIComponent(el.dataset.lon);
    fetch(url, { cache: "no-store" })
      .then(function (resp) {
        return resp.ok ? resp.json() : null;
      })
      .then(function (data) {
        address = data && data.address ? data.address : null;
        showAddress();
        detail.dataset.address = address ? "found" : "none";
      })
      .catch(function () {
        detail.dataset.address = "none";
      });
  }
  if (Vigie) askAddress();

  if (Vigie) {
    Vigie.on("alert", function (data) {
      if (data.alert_id === alertId) refresh();
    });
    Vigie.on("reconnected", refresh);
  }
  // Timeline sources without an alert_event row (e.g. delivery receipts) show up this way.
  setInterval(refresh, 15000);

  // ---- the map ----------------------------------------------------------------------------
  var dataEl = document.getElementById("map-data");
  var mapEl = document.getElementById("map");
  if (!dataEl || !mapEl || !window.L) return;
  var data = JSON.parse(dataEl.textContent);
  var pos = data.position;
  if (!pos) return;
  var L = window.L;
  var center = [pos.lat, pos.lon];
  // Street level over the tiles; over outlines only, the communes around the point (their
  // names on hover) give the bearings.
  var OUTLINES_ZOOM = 12;
  var maxZoom = data.tile_url ? 16 : OUTLINES_ZOOM;
  var map = L.map(mapEl, { zoomControl: true, attributionControl: true }).setView(center, maxZoom);
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  map.attributionControl.addAttribution("Contours : " + data.boundary_attribution);
  L.control.scale({ imperial: false }).addTo(map);

  var outlines = L.geoJSON(null, {
    interactive: false,
    style: function (feature) {
      var mine = (data.departements || []).indexOf(feature.properties.code) >= 0;
      return {
        color: mine ? "#c62828" : "#546e7a",
        weight: mine ? 3 : 1.5,
        fill: true,
        fillColor: mine ? "#ffcdd2" : "#eceff1",
        // Over street tiles the fill would hide the streets.
        fillOpacity: mapEl.dataset.basemap !== "outlines" ? 0 : mine ? 0.35 : 0.2,
      };
    },
    onEachFeature: function (feature, layer) {
      layer.bindTooltip(feature.properties.code + " " + feature.properties.nom, {
        permanent: true,
        direction: "center",
        className: "map-label",
      });
    },
  }).addTo(map);

  if (data.trail && data.trail.length > 1) {
    L.polyline(
      data.trail.map(function (p) {
        return [p.lat, p.lon];
      }),
      { color: "#1565c0", weight: 3, dashArray: "6 6" }
    ).addTo(map);
    data.trail.forEach(function (p) {
      L.circleMarker([p.lat, p.lon], { radius: 4, color: "#1565c0", weight: 2, fillOpacity: 1 })
        .bindTooltip(new Date(p.at).toLocaleTimeString("fr-FR", { timeZone: "Europe/Paris" }))
        .addTo(map);
    });
  }
  if (pos.acc_m) {
    L.circle(center, {
      radius: pos.acc_m,
      color: "#d32f2f",
      weight: 2,
      fillColor: "#e53935",
      fillOpacity: 0.18,
    }).addTo(map);
  }
  L.circleMarker(center, { radius: 8, color: "#ffffff", weight: 3, fillColor: "#d32f2f", fillOpacity: 1 })
    .bindTooltip("Position de l'alerte")
    .addTo(map);

  if (pos.acc_m) {
    map.fitBounds(L.latLng(center).toBounds(pos.acc_m * 2), { maxZoom: maxZoom, padding: [30, 30] });
  }
  // The background last: a fallback may change the zoom.
  Vigie.basemap(map, mapEl, {
    tileUrl: data.tile_url,
    tileAttribution: data.tile_attribution,
    communesUrl: data.communes_url,
    onFallback: function () {
      maxZoom = OUTLINES_ZOOM;
      if (map.getZoom() > OUTLINES_ZOOM) map.setView(center, OUTLINES_ZOOM, { animate: false });
      outlines.setStyle(outlines.options.style);
    },
  });

  // ---- new positions, drawn as they arrive (position rows reach the page through the
  // live refresh: #map-live carries the whole trail) --------------------------------------
  var drawn = {};
  (data.trail || []).forEach(function (p) {
    drawn[p.at + p.lat + p.lon] = true;
  });
  var liveLine = L.polyline([], { color: "#1565c0", weight: 3 }).addTo(map);
  var latest = null;
  var latestCircle = null;
  mapEl.dataset.positions = String((data.trail || []).length);
  onMapData = function () {
    var el = document.getElementById("map-live");
    if (!el) return;
    var fresh = JSON.parse(el.textContent);
    var trail = fresh.trail || [];
    var added = 0;
    trail.forEach(function (p) {
      var key = p.at + p.lat + p.lon;
      if (drawn[key]) return;
      drawn[key] = true;
      added++;
    });
    if (!added) return;
    liveLine.setLatLngs(
      trail.map(function (p) {
        return [p.lat, p.lon];
      })
    );
    var last = trail[trail.length - 1];
    var here = [last.lat, last.lon];
    if (latest === null) {
      latest = L.circleMarker(here, { radius: 8, color: "#ffffff", weight: 3, fillColor: "#1565c0", fillOpacity: 1 })
        .bindTooltip("Dernière position")
        .addTo(map);
    } else {
      latest.setLatLng(here);
    }
    if (latestCircle) map.removeLayer(latestCircle);
    latestCircle = last.acc_m
      ? L.circle(here, { radius: last.acc_m, color: "#1565c0", weight: 2, fillOpacity: 0.12 }).addTo(map)
      : null;
    if (!map.getBounds().contains(here)) map.panTo(here);
    mapEl.dataset.positions = String(trail.length);
  };

  var bbox = [pos.lon - 1.5, pos.lat - 1.0, pos.lon + 1.5, pos.lat + 1.0].join(",");
  fetch(data.outlines_url + "?bbox=" + encodeURIComponent(bbox), { cache: "default" })
    .then(function (resp) {
      return resp.ok ? resp.json() : null;
    })
    .then(function (geojson) {
      if (geojson) outlines.addData(geojson);
      mapEl.dataset.outlines = geojson ? String(geojson.features.length) : "0";
    })
    .catch(function () {
      mapEl.dataset.outlines = "error";
    });
})();
