/* Vigie — alert detail: live status and timeline, and the map (Leaflet). The map needs no
   tile server: département outlines are served by Vigie itself; tiles are an option. */
(function () {
  "use strict";

  var Vigie = window.Vigie;
  var detail = document.getElementById("detail");
  if (!detail) return;
  var alertId = detail.dataset.alertId;

  // ---- live refresh of the parts that change (the resolve form is left alone, so a note
  // being typed is never wiped) ---------------------------------------------------------
  var pending = false;

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
      })
      .catch(function () {
        pending = false;
      });
  }

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
  // Without tiles only the outlines give bearings: stay zoomed out enough to see the
  // département and its neighbours (coordinates and commune are printed under the map).
  var maxZoom = data.tile_url ? 16 : 9;
  var map = L.map(mapEl, { zoomControl: true, attributionControl: true }).setView(center, maxZoom);
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  map.attributionControl.addAttribution("Contours : " + data.boundary_attribution);
  L.control.scale({ imperial: false }).addTo(map);
  if (data.tile_url) {
    L.tileLayer(data.tile_url, { maxZoom: 19, attribution: data.tile_attribution || "" }).addTo(map);
  }

  var outlines = L.geoJSON(null, {
    interactive: false,
    style: function (feature) {
      var mine = (data.departements || []).indexOf(feature.properties.code) >= 0;
      return {
        color: mine ? "#c62828" : "#546e7a",
        weight: mine ? 3 : 1.5,
        fill: true,
        fillColor: mine ? "#ffcdd2" : "#eceff1",
        fillOpacity: mine ? 0.35 : 0.2,
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
