/* Vigie — the fleet map on the devices page: devices online (green) and visits in progress
   (blue, with how long they have run), refreshed every 30 s, over the street tiles or the
   outlines (basemap.js). Text is set with textContent. */
(function () {
  "use strict";

  var Vigie = window.Vigie;
  var mapEl = document.getElementById("fleet-map");
  var tbody = document.getElementById("visits-rows");
  if (!Vigie || !mapEl || !window.L) return;
  var L = window.L;
  var map = L.map(mapEl, { zoomControl: true }).setView([46.6, 2.4], 5);
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  var outlines = L.geoJSON(null, {
    interactive: false,
    style: function () {
      var bare = mapEl.dataset.basemap === "outlines";
      return { color: "#546e7a", weight: 1, fillColor: "#eceff1", fillOpacity: bare ? 0.2 : 0 };
    },
  }).addTo(map);
  Vigie.basemap(map, mapEl, {
    tileUrl: mapEl.dataset.tileUrl,
    tileAttribution: mapEl.dataset.tileAttribution,
    communesUrl: Vigie.prefix + "/geo/communes.geojson",
    onFallback: function () {
      outlines.setStyle(outlines.options.style);
    },
  });
  fetch(Vigie.prefix + "/geo/departements.geojson", { cache: "default" })
    .then(function (r) {
      return r.ok ? r.json() : null;
    })
    .then(function (g) {
      if (g) outlines.addData(g);
    })
    .catch(function () {});
  var layer = L.layerGroup().addTo(map);
  var fitted = false;

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }

  function load() {
    fetch(Vigie.prefix + "/fleet.json", { cache: "no-store" })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        layer.clearLayers();
        var points = [];
        data.devices.forEach(function (d) {
          points.push([d.lat, d.lon]);
          L.circleMarker([d.lat, d.lon], { radius: 6, color: "#1b5e20", weight: 2, fillColor: "#43a047", fillOpacity: 0.9 })
            .bindTooltip(d.device_id)
            .addTo(layer);
        });
        tbody.innerHTML = "";
        var now = Vigie.now();
        data.visits.forEach(function (v) {
          if (v.lat !== null && v.lon !== null) {
            points.push([v.lat, v.lon]);
            L.circleMarker([v.lat, v.lon], { radius: 9, color: "#0d47a1", weight: 3, fillOpacity: 0 })
              .bindTooltip("Visite : " + v.device_id)
              .addTo(layer);
          }
          var tr = document.createElement("tr");
          cell(tr, v.device_id);
          cell(tr, new Date(v.started_at).toLocaleTimeString("fr-FR", { timeZone: "Europe/Paris" }));
          cell(tr, Vigie.elapsed(now - Date.parse(v.started_at)));
          cell(tr, v.expected_end ? new Date(v.expected_end).toLocaleTimeString("fr-FR", { timeZone: "Europe/Paris" }) : "—");
          cell(tr, v.status_fr);
          tbody.appendChild(tr);
        });
        if (!data.visits.length) {
          var tr = document.createElement("tr");
          var td = document.createElement("td");
          td.colSpan = 5;
          td.className = "muted";
          td.textContent = "Aucune visite en cours.";
          tr.appendChild(td);
          tbody.appendChild(tr);
        }
        if (points.length && !fitted) {
          map.fitBounds(L.latLngBounds(points), { maxZoom: 12, padding: [30, 30] });
          fitted = true;
        }
        mapEl.dataset.devices = String(data.devices.length);
        mapEl.dataset.visits = String(data.visits.length);
      })
      .catch(function () {});
  }
  load();
  setInterval(load, 30000);
})();
