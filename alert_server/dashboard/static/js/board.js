/* Vigie — the live board: rows arrive and change through the stream, without reloading.
   Rows are rendered by the server (same template as the first paint) and inserted as HTML
   the server escaped; duress first, then the unacknowledged who waited longest. */
(function () {
  "use strict";

  var Vigie = window.Vigie;
  var tbody = document.getElementById("alert-rows");
  var empty = document.getElementById("board-empty");
  var countOpen = document.getElementById("count-open");
  var countAck = document.getElementById("count-ack");
  var filters = document.getElementById("filters");
  if (!Vigie || !tbody) return;

  function rows() {
    return Array.prototype.slice.call(tbody.querySelectorAll("tr.alert-row"));
  }

  function find(alertId) {
    var all = rows();
    for (var i = 0; i < all.length; i++) {
      if (all[i].dataset.alertId === alertId) return all[i];
    }
    return null;
  }

  // The server's order (presstime.urgency_key): duress waiting, then waiting longest first
  // (time of the press on the device), then taken in charge and closed, newest first.
  function rank(tr) {
    var group = Number(tr.dataset.urgency || 3);
    var at = Date.parse(tr.dataset.pressed || tr.dataset.created) || 0;
    return [group, group < 2 ? at : -at];
  }

  function compare(a, b) {
    var ra = rank(a);
    var rb = rank(b);
    for (var i = 0; i < ra.length; i++) {
      if (ra[i] !== rb[i]) return ra[i] < rb[i] ? -1 : 1;
    }
    return 0;
  }

  function sortRows() {
    var all = rows();
    var sorted = all.slice().sort(compare);
    for (var i = 0; i < sorted.length; i++) {
      if (all[i] !== sorted[i]) {
        sorted.forEach(function (tr) {
          tbody.appendChild(tr);
        });
        return;
      }
    }
  }

  function fromHtml(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function refreshCounts() {
    var all = rows();
    var open = all.filter(function (tr) {
      return tr.dataset.state === Vigie.words.AlertState.OPEN;
    }).length;
    var ack = all.filter(function (tr) {
      return tr.dataset.state === Vigie.words.AlertState.ACKNOWLEDGED;
    }).length;
    if (countOpen) countOpen.textContent = open + " non prise(s) en charge";
    if (countAck) countAck.textContent = ack + " prise(s) en charge";
    if (empty) empty.hidden = all.length > 0;
  }

  function upsert(data) {
    var existing = find(data.alert_id);
    if (!data.match || !data.html) {
      if (existing) existing.remove();
      refreshCounts();
      return;
    }
    var tr = fromHtml(data.html);
    if (!tr) return;
    if (existing) {
      existing.replaceWith(tr);
    } else {
      tr.classList.add("is-new");
      tbody.appendChild(tr);
    }
    sortRows();
    refreshCounts();
  }

  function resync() {
    var params = new URL(document.body.dataset.stream, window.location.href).searchParams;
    params.delete("view");
    fetch(Vigie.prefix + "/board/rows?" + params.toString(), { cache: "no-store" })
      .then(function (resp) {
        return resp.ok ? resp.json() : null;
      })
      .then(function (data) {
        if (!data) return;
        tbody.innerHTML = data.rows.join("");
        Vigie.alarm.reset(data.open_ids);
        sortRows();
        refreshCounts();
      })
      .catch(function () {
        /* the next reconnection tries again */
      });
  }

  Vigie.on("alert", upsert);
  Vigie.on("reconnected", resync);

  if (filters) {
    filters.addEventListener("change", function () {
      filters.submit();
    });
  }
  refreshCounts();
})();
