/* Vigie worker app: the phone as a panic button (protocol.md v1 + 1.1, MQTT over WebSocket).
 *
 * Why it is built this way:
 * - The phone talks to the broker directly, as any device does (its own account, its ACL): an
 *   alert never depends on the HTTP server being up.
 * - Every uplink that needs an answer (alert → alert.received, session → session.accepted or
 *   session.rejected) is kept in IndexedDB until answered and re-published with the SAME id
 *   (after 5 s, then every 10 s; at once when the connection comes back), so an alert pressed
 *   without network, or in a page that is then closed, is sent when the network returns.
 * - The screen only says "Alerte reçue par le centre" when the server said so.
 * - A cancel with the duress PIN must look exactly like a real one: the app shows whatever the
 *   server answers (alert.cancelled in both cases) and nothing else.
 */
"use strict";

(function () {
  const HOLD_MS = 3000;
  const FIRST_RETRY_MS = 5000;
  const NEXT_RETRY_MS = 10000;
  const EMERGENCY_AFTER_MS = 10000;
  const HB_MS = 60000;
  // Browsers give the 95 % confidence radius (W3C Geolocation); the protocol wants the 68 %
  // one. For a circular normal error the radius of probability p is sigma*sqrt(-2 ln(1-p)):
  // r68 / r95 = sqrt(ln(1/0.32)) / sqrt(ln(1/0.05)) = 0.6167.
  const ACC_95_TO_68 = Math.sqrt(Math.log(1 / 0.32)) / Math.sqrt(Math.log(1 / 0.05));
  // Above this 95 % radius a fix is most likely from Wi-Fi/cell positioning, not satellites.
  const GPS_MAX_ACC_95 = 100;
  const $ = (id) => document.getElementById(id);
  // The protocol's words (vigie/vocabulary.py, served as /app/vocabulary.js): never spelled here.
  const W = window.VIGIE_WORDS;
  const CMD = W.DownlinkType;
  const KIND = W.AlertKind;
  const ACTION = W.SessionAction;
  const UP = W.UplinkTopic;

  // ---------------------------------------------------------------- storage (IndexedDB) ---
  let dbp = null;
  function db() {
    if (!dbp) {
      dbp = new Promise((resolve, reject) => {
        const req = indexedDB.open("vigie", 1);
        req.onupgradeneeded = () => {
          req.result.createObjectStore("kv");
          req.result.createObjectStore("outbox", { keyPath: "key" });
        };
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    }
    return dbp;
  }
  async function tx(store, mode, fn) {
    const d = await db();
    return new Promise((resolve, reject) => {
      const t = d.transaction(store, mode);
      const out = fn(t.objectStore(store));
      t.oncomplete = () => resolve(out && "result" in out ? out.result : undefined);
      t.onerror = () => reject(t.error);
    });
  }
  const kvGet = (k) => tx("kv", "readonly", (s) => s.get(k));
  const kvSet = (k, v) => tx("kv", "readwrite", (s) => s.put(v, k));
  const kvDel = (k) => tx("kv", "readwrite", (s) => s.delete(k));
  const outboxAll = () => tx("outbox", "readonly", (s) => s.getAll());
  const outboxPut = (e) => tx("outbox", "readwrite", (s) => s.put(e));
  const outboxDel = (k) => tx("outbox", "readwrite", (s) => s.delete(k));

  // -------------------------------------------------------------------------- helpers ----
  const nowIso = () => new Date().toISOString();
  const uuid = () =>
    crypto.randomUUID
      ? crypto.randomUUID()
      : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
          (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));
  const vibrate = (p) => { if (navigator.vibrate) navigator.vibrate(p); };
  function beep(times) {
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      const ctx = new Ctx();
      for (let i = 0; i < times; i++) {
        const o = ctx.createOscillator();
        const g = ctx.createGain();
        o.frequency.value = 880;
        g.gain.value = 0.3;
        o.connect(g).connect(ctx.destination);
        o.start(ctx.currentTime + i * 0.5);
        o.stop(ctx.currentTime + i * 0.5 + 0.3);
      }
    } catch (e) { /* no sound available: the screen and vibration remain */ }
  }
  const show = (id, on) => { $(id).hidden = !on; };

  // ----------------------------------------------------------------- position, battery ----
  let lastPos = null;
  function toProtocolPos(p) {
    const c = p.coords;
    return {
      lat: Math.round(c.latitude * 1e6) / 1e6,
      lon: Math.round(c.longitude * 1e6) / 1e6,
      acc_m: Math.max(1, Math.round(c.accuracy * ACC_95_TO_68)),
      ts: new Date(p.timestamp).toISOString(),
      src: c.accuracy <= GPS_MAX_ACC_95 ? "gps" : "wifi",
    };
  }
  function watchPosition() {
    if (!navigator.geolocation) return;
    navigator.geolocation.watchPosition(
      (p) => { lastPos = toProtocolPos(p); },
      () => {},
      { enableHighAccuracy: true, maximumAge: 30000, timeout: 20000 });
  }
  function freshPosition(timeoutMs) {
    return new Promise((resolve) => {
      if (!navigator.geolocation) return resolve(lastPos);
      let done = false;
      const finish = (v) => { if (!done) { done = true; resolve(v); } };
      setTimeout(() => finish(lastPos), timeoutMs);
      navigator.geolocation.getCurrentPosition(
        (p) => { lastPos = toProtocolPos(p); finish(lastPos); },
        () => finish(lastPos),
        { enableHighAccuracy: true, maximumAge: 10000, timeout: timeoutMs });
    });
  }
  let battery = null;
  if (navigator.getBattery) navigator.getBattery().then((b) => { battery = b; }, () => {});
  const batt = () => (battery ? Math.round(battery.level * 100) : null);

  // --------------------------------------------------------------------------- state ----
  let creds = null;       // {device_id, mqtt_username, mqtt_password, ws_url}
  let client = null;      // MQTT.js client
  let refused = false;
  let current = null;     // the alert on screen: {alert_id, kind, state, by, sentAt, server}
  let visit = null;       // {session_id, expected_end, memo, state}
  const silentIds = new Set();
  const topic = (s) => `vigie/v1/dev/${creds.device_id}/${s}`;

  function setConn(state, text) {
    const el = $("conn");
    el.dataset.state = state;
    el.textContent = text;
    show("offline-note", state === "offline" && !refused);
  }

  // ---------------------------------------------------------------------------- MQTT ----
  function connect() {
    if (!window.mqtt) { setConn("offline", "MQTT indisponible"); return; }
    const v5 = creds.mqtt_version !== 4;
    client = window.mqtt.connect(creds.ws_url, {
      clientId: creds.device_id,
      username: creds.mqtt_username,
      password: creds.mqtt_password,
      protocolVersion: v5 ? 5 : 4,
      clean: false,
      properties: v5 ? { sessionExpiryInterval: 86400 } : undefined,
      keepalive: 30,
      reconnectPeriod: 2000,
      connectTimeout: 8000,
      will: {
        topic: topic(UP.STATUS),
        payload: JSON.stringify({ v: 1, state: "offline" }),
        qos: 1,
        retain: true,
      },
    });
    client.on("connect", () => {
      refused = false;
      show("revoked", false);
      setConn("online", "Connectée");
      client.subscribe(topic("cmd"), { qos: 1 });
      client.publish(topic(UP.STATUS), JSON.stringify({ v: 1, state: "online" }), { qos: 1, retain: true });
      heartbeat();
      flush(true);
    });
    client.on("message", (t, payload) => {
      try { onCommand(JSON.parse(new TextDecoder().decode(payload))); } catch (e) { /* ignored */ }
    });
    client.on("error", (err) => {
      // CONNACK 134 (bad user name or password) / 135 (not authorised): revoked or re-enrolled.
      if (err && (err.code === 134 || err.code === 135 || err.code === 4 || err.code === 5)) {
        refused = true;
        setConn("refused", "Refusé");
        show("revoked", true);
        if (current) renderAlert();
      }
    });
    client.on("offline", () => { if (!refused) setConn("offline", "Hors ligne"); });
    client.on("close", () => { if (!refused) setConn("offline", "Hors ligne"); });
    client.on("reconnect", () => { if (!refused) setConn("offline", "Connexion…"); });
  }
  const connected = () => client && client.connected;
  function publish(suffix, body, qos) {
    if (!connected()) return false;
    client.publish(topic(suffix), JSON.stringify(body), { qos: qos === undefined ? 1 : qos });
    return true;
  }

  // ---------------------------------------------------------- outbox (at-least-once) ----
  let seq = Date.now();
  async function enqueue(entry) {
    entry.attempts = 0;
    entry.next = 0;
    // Sent in the order they were made (a visit's start before its end), whatever the keys.
    entry.seq = ++seq;
    await outboxPut(entry);
    flush(false);
  }
  let flushing = false;
  async function flush(now) {
    if (flushing || !creds) return;
    flushing = true;
    try {
      const t = Date.now();
      const pending = (await outboxAll()).sort((a, b) => (a.seq || 0) - (b.seq || 0));
      for (const e of pending) {
        if (!connected()) break;
        if (!now && e.next > t) continue;
        if (publish(e.suffix, e.body)) {
          e.attempts += 1;
          e.next = Date.now() + (e.attempts === 1 ? FIRST_RETRY_MS : NEXT_RETRY_MS);
          await outboxPut(e);
        }
      }
    } finally {
      flushing = false;
    }
  }
  setInterval(() => flush(false), 1000);

  // --------------------------------------------------------------------------- alerts ----
  async function raiseAlert(kind) {
    const silent = kind === KIND.SOS_SILENT;
    const body = { v: 1, alert_id: uuid(), kind: kind, ts: nowIso() };
    if (lastPos) body.pos = lastPos;
    const b = batt();
    if (b !== null) body.batt = b;
    if (silent) {
      silentIds.add(body.alert_id);
      await kvSet("silent", [...silentIds]);
      setDiscreetSign("sent");
    } else {
      vibrate([200, 100, 200]);
      current = { alert_id: body.alert_id, kind: kind, state: "sending", sentAt: Date.now() };
      alertHidden = false;
      await kvSet("current", current);
      renderAlert();
    }
    await enqueue({ key: "alert:" + body.alert_id, suffix: UP.ALERT, body: body, answer: body.alert_id });
    // A fresh fix does not delay the alert: it follows on `pos` when it comes.
    freshPosition(8000).then((p) => {
      if (p && (!body.pos || p.ts !== body.pos.ts)) publish(UP.POS, { v: 1, ts: nowIso(), pos: p }, 1);
    });
  }

  function setDiscreetSign(state) {
    const choice = $("discreet-choice").value;
    $("discreet-sign").dataset.state = choice === "none" ? "none" : state;
  }

  let alertHidden = false;
  function renderAlert() {
    show("alert-ongoing", !!current && alertHidden);
    if (!current) { alertHidden = false; show("overlay-alert", false); return; }
    show("overlay-alert", !alertHidden);
    const st = $("alert-state");
    const overdue = current.kind === KIND.SESSION_OVERDUE || current.kind === KIND.SESSION_OFFLINE;
    $("alert-title").textContent = overdue ? "Alerte : visite sans nouvelles" : "Alerte SOS";
    let text = "Envoi…";
    let detail = connected() && navigator.onLine ? "" : "Pas de réseau : l'alerte est gardée et partira dès son retour.";
    if (refused) detail = "Ce téléphone n'est plus autorisé : l'alerte ne part pas. Appelez le 17.";
    if (current.state === "received") { text = "Alerte reçue par le centre"; detail = "Les secours sont prévenus."; }
    if (current.state === "acknowledged") { text = `Prise en charge par ${current.by || "le centre"}`; detail = ""; }
    if (overdue && current.state === "received") {
      detail = "Votre visite a dépassé l'heure prévue sans réponse : le centre est prévenu. Si tout va bien, annulez avec votre code.";
    }
    st.textContent = text;
    st.dataset.state = current.state;
    $("alert-detail").textContent = detail;
    const waiting = current.state === "sending";
    // Back to the home screen once the centre has the alert (a visit can go on meanwhile).
    show("alert-hide", !waiting);
    show("emergency", refused || (waiting && Date.now() - current.sentAt >= EMERGENCY_AFTER_MS));
  }
  setInterval(() => { if (current && current.state === "sending") renderAlert(); }, 1000);

  async function onCommand(c) {
    if (!c || typeof c.type !== "string") return;
    const id = c.alert_id;
    if (c.type === CMD.ALERT_RECEIVED) {
      await outboxDel("alert:" + id);
      if (silentIds.has(id)) { setDiscreetSign("received"); return; }
      if (current && current.alert_id === id && current.state === "sending") {
        current.state = "received";
        vibrate(300);
        await kvSet("current", current);
        renderAlert();
      }
      return;
    }
    if (c.type === CMD.ALERT_ACKNOWLEDGED) {
      if (silentIds.has(id)) return;  // a discreet alert stays silent
      if (current && current.alert_id === id) {
        current.state = "acknowledged";
        current.by = typeof c.by === "string" ? c.by : "";
        vibrate([300, 150, 300]);
        await kvSet("current", current);
        renderAlert();
      }
      return;
    }
    if (c.type === CMD.ALERT_RAISED) {
      current = { alert_id: id, kind: c.kind || KIND.SESSION_OVERDUE, state: "received", sentAt: Date.now(), server: true };
      alertHidden = false;
      await kvSet("current", current);
      show("overlay-warning", false);
      vibrate([500, 200, 500, 200, 500]);
      beep(3);
      renderAlert();
      return;
    }
    if (c.type === CMD.ALERT_CANCELLED) {
      await outboxDel("alert:" + id);
      if (silentIds.has(id)) { silentIds.delete(id); await kvSet("silent", [...silentIds]); setDiscreetSign("none"); }
      if (pinFor === id || (current && current.alert_id === id)) {
        pinFor = null;
        current = null;
        await kvDel("current");
        show("overlay-pin", false);
        show("overlay-alert", false);
        show("overlay-done", true);
      }
      return;
    }
    if (c.type === CMD.ALERT_RESOLVED) {
      if (current && current.alert_id === id) { current = null; await kvDel("current"); renderAlert(); }
      return;
    }
    if (c.type === CMD.CANCEL_REJECTED) {
      if (pinFor !== id) return;
      const msgs = {
        wrong_pin: "Code incorrect. L'alerte continue.",
        locked: "Trop de codes faux : l'annulation est bloquée pendant un moment. L'alerte continue.",
        already_closed: "Cette alerte est déjà close.",
        unknown_alert: "L'alerte n'est pas encore arrivée au centre. Réessayez dans un instant.",
      };
      pin = "";
      renderPin(msgs[c.reason] || "Annulation refusée. L'alerte continue.");
      return;
    }
    if (c.type === CMD.SESSION_ACCEPTED) {
      await outboxDel("session:" + c.session_id + ":" + c.action);
      if (visit && visit.session_id === c.session_id) {
        if (c.action === ACTION.END) { await endVisitLocally(); return; }
        // The deadline the server watches now (after a check-in that answered a warning:
        // the check-in plus its extension).
        if (c.expected_end) visit.expected_end = c.expected_end;
        visit.state = "watched";
        if (c.action === ACTION.CHECKIN) visit.checkin = { state: "received", at: nowIso() };
        await kvSet("visit", visit);
        renderVisit();
      }
      return;
    }
    if (c.type === CMD.SESSION_REJECTED) {
      await outboxDel("session:" + c.session_id + ":" + c.action);
      const reasons = {
        bad_payload: "message refusé",
        memo_too_long: "adresse trop longue",
        unknown_session: "visite inconnue du centre",
        in_the_past: "heure de fin déjà passée",
      };
      if (!visit || visit.session_id !== c.session_id || c.action === ACTION.END) return;
      const why = reasons[c.reason] || c.reason || "refus du centre";
      $("not-watched").textContent = `Attention : vous n'êtes PAS surveillée pendant cette visite (${why}). Recommencez la visite ou appelez le 17 en cas de danger.`;
      show("not-watched", true);
      vibrate([400, 200, 400]);
      visit.state = "rejected";
      await kvSet("visit", visit);
      renderVisit();
      return;
    }
    if (c.type === CMD.SESSION_WARNING) {
      show("overlay-warning", true);
      vibrate([800, 300, 800, 300, 800]);
      beep(4);
      return;
    }
    if (c.type === CMD.LOCATE) {
      freshPosition(8000).then((p) => { if (p) publish(UP.POS, { v: 1, ts: nowIso(), pos: p }, 1); });
    }
  }

  // ------------------------------------------------------------------------ hold to send ----
  function holdButton(el, onDone, withRing) {
    const ring = $("ring");
    const full = 578.05;
    let start = 0;
    let raf = 0;
    let timer = 0;
    const reset = () => {
      cancelAnimationFrame(raf);
      clearTimeout(timer);
      start = 0;
      if (withRing) { ring.style.strokeDashoffset = String(full); el.dataset.holding = "false"; $("sos-sub").textContent = "Appuyer 3 s"; }
    };
    const tick = () => {
      if (!start) return;
      const f = Math.min(1, (performance.now() - start) / HOLD_MS);
      ring.style.strokeDashoffset = String(full * (1 - f));
      raf = requestAnimationFrame(tick);
    };
    const down = (ev) => {
      if (ev.button !== undefined && ev.button > 0) return;
      if (start) return;
      ev.preventDefault();
      start = performance.now();
      if (withRing) {
        el.dataset.holding = "true";
        $("sos-sub").textContent = "Maintenez…";
        vibrate(30);
        raf = requestAnimationFrame(tick);
      }
      timer = setTimeout(() => { reset(); onDone(); }, HOLD_MS);
    };
    el.addEventListener("pointerdown", down);
    ["pointerup", "pointercancel", "pointerleave"].forEach((n) => el.addEventListener(n, reset));
    el.addEventListener("contextmenu", (ev) => ev.preventDefault());
    el.addEventListener("keydown", (ev) => { if ((ev.key === " " || ev.key === "Enter") && !ev.repeat) down(ev); });
    el.addEventListener("keyup", reset);
  }

  // ----------------------------------------------------------------------- PIN keypad ----
  let pin = "";
  let pinFor = null;
  function renderPin(msg) {
    $("pin-dots").textContent = "•".repeat(pin.length) || " ";
    if (msg !== undefined) $("pin-msg").textContent = msg;
  }
  function openPin() {
    if (!current) return;
    pinFor = current.alert_id;
    pin = "";
    renderPin("");
    show("overlay-pin", true);
  }
  $("keypad").addEventListener("click", (ev) => {
    const k = ev.target && ev.target.dataset ? ev.target.dataset.k : null;
    if (!k) return;
    if (k === "del") { pin = pin.slice(0, -1); renderPin(""); return; }
    if (k === "ok") {
      if (pin.length < 4) { renderPin("Le code fait au moins 4 chiffres."); return; }
      if (!publish(UP.CANCEL, { v: 1, alert_id: pinFor, ts: nowIso(), pin: pin })) {
        renderPin("Pas de réseau : l'annulation ne peut pas partir. L'alerte continue.");
        return;
      }
      pin = "";
      renderPin("Vérification…");
      return;
    }
    if (pin.length < 8) { pin += k; renderPin(""); }
  });
  $("pin-back").addEventListener("click", () => { show("overlay-pin", false); pin = ""; });
  $("alert-cancel").addEventListener("click", openPin);
  $("alert-hide").addEventListener("click", () => { alertHidden = true; renderAlert(); });
  $("alert-ongoing").addEventListener("click", () => { alertHidden = false; renderAlert(); });
  $("done-ok").addEventListener("click", () => show("overlay-done", false));

  // --------------------------------------------------------------------------- visits ----
  let wakeLock = null;
  async function keepScreenOn(on) {
    try {
      if (on && !wakeLock && navigator.wakeLock) {
        wakeLock = await navigator.wakeLock.request("screen");
        wakeLock.addEventListener("release", () => { wakeLock = null; show("wake", false); });
        show("wake", true);
      } else if (!on && wakeLock) {
        await wakeLock.release();
        wakeLock = null;
      }
    } catch (e) { show("wake", false); }
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && visit) keepScreenOn(true);
  });

  async function sendSession(action, extra) {
    const body = Object.assign({ v: 1, session_id: visit.session_id, action: action, ts: nowIso() }, extra);
    if (lastPos) body.pos = lastPos;
    await enqueue({ key: "session:" + visit.session_id + ":" + action, suffix: UP.SESSION, body: body });
  }
  function renderVisit() {
    show("visit-form", !visit);
    show("visit-running", !!visit);
    if (!visit) return;
    const st = $("visit-state");
    st.dataset.state = visit.state;
    st.textContent = visit.state === "watched"
      ? `Surveillée jusqu'à ${new Date(visit.expected_end).toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit" })}`
      : visit.state === "rejected" ? "NON surveillée" : "Envoi…";
    $("visit-memo-shown").textContent = visit.memo || "";
    const note = $("visit-note");
    const ck = visit.checkin;
    note.dataset.state = ck ? ck.state : "none";
    note.textContent = !ck ? ""
      : ck.state === "received"
        ? `« Je vais bien » reçu par le centre à ${new Date(ck.at).toLocaleTimeString("fr-FR", { hour: "2-digit", minute: "2-digit" })}.`
        : "« Je vais bien » : envoi…";
    tickCountdown();
  }
  function tickCountdown() {
    if (!visit) return;
    const left = Math.round((new Date(visit.expected_end).getTime() - Date.now()) / 1000);
    const a = Math.abs(left);
    const txt = `${Math.floor(a / 60)}:${String(a % 60).padStart(2, "0")}`;
    $("visit-countdown").textContent = left < 0 ? `dépassée de ${txt}` : txt;
  }
  setInterval(tickCountdown, 1000);
  async function endVisitLocally() {
    visit = null;
    await kvDel("visit");
    show("not-watched", false);
    keepScreenOn(false);
    renderVisit();
  }
  $("visit-start").addEventListener("click", async () => {
    const minutes = parseFloat($("visit-duration").value);
    if (!(minutes > 0)) { $("visit-duration").focus(); return; }
    show("not-watched", false);
    const end = new Date(Date.now() + minutes * 60000).toISOString();
    visit = { session_id: uuid(), expected_end: end, memo: $("visit-memo").value.trim(), state: "sending" };
    await kvSet("visit", visit);
    const extra = { expected_end: end };
    if (visit.memo) extra.memo = visit.memo;
    await sendSession(ACTION.START, extra);
    keepScreenOn(true);
    renderVisit();
  });
  async function extend() {
    if (!visit) return;
    const base = Math.max(Date.now(), new Date(visit.expected_end).getTime());
    visit.expected_end = new Date(base + 15 * 60000).toISOString();
    visit.state = visit.state === "rejected" ? "rejected" : "sending";
    await kvSet("visit", visit);
    await sendSession(ACTION.EXTEND, { expected_end: visit.expected_end });
    show("overlay-warning", false);
    renderVisit();
  }
  async function checkin() {
    if (!visit) return;
    visit.checkin = { state: "sending", at: nowIso() };
    await kvSet("visit", visit);
    await sendSession(ACTION.CHECKIN, {});
    show("overlay-warning", false);
    renderVisit();
  }
  $("visit-extend").addEventListener("click", extend);
  $("visit-checkin").addEventListener("click", checkin);
  $("warning-extend").addEventListener("click", extend);
  $("warning-ok").addEventListener("click", checkin);
  $("visit-end").addEventListener("click", async () => {
    if (!visit) return;
    await sendSession(ACTION.END, {});
    await endVisitLocally();
  });

  // ------------------------------------------------------------------------ heartbeat ----
  function heartbeat() {
    const body = { v: 1, ts: nowIso() };
    const b = batt();
    if (b !== null) { body.batt = b; body.charging = !!battery.charging; }
    if (lastPos) body.pos = lastPos;
    publish(UP.HB, body, 0);
  }
  setInterval(heartbeat, HB_MS);
  window.addEventListener("pagehide", () => {
    // One connection per device (protocol 1.1): a deliberate disconnect says so first.
    if (connected()) {
      client.publish(topic(UP.STATUS), JSON.stringify({ v: 1, state: "offline" }), { qos: 1, retain: true });
    }
  });

  // ------------------------------------------------------------------------ enrolment ----
  async function enrol(code) {
    show("screen-enrol", true);
    show("screen-main", false);
    try {
      const r = await fetch("/app/api/enrol", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ code: code }),
      });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(data.detail || "Inscription refusée par le serveur.");
      await kvSet("creds", data);
      history.replaceState(null, "", "/app/");
      return data;
    } catch (e) {
      $("enrol-status").textContent = "Ce téléphone n'est pas inscrit.";
      $("enrol-error").textContent = e instanceof TypeError
        ? "Pas de réseau : ouvrez à nouveau le lien quand le téléphone est connecté."
        : e.message;
      show("enrol-error", true);
      return null;
    }
  }

  // -------------------------------------------------------------------------- start-up ----
  async function main() {
    if ("serviceWorker" in navigator) navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
    const code = new URLSearchParams(location.search).get("code");
    creds = (await kvGet("creds")) || null;
    if (code) {
      const fresh = await enrol(code);
      if (fresh) creds = fresh;
      else if (!creds) return;
    }
    if (!creds) {
      show("screen-enrol", true);
      $("enrol-status").textContent = "Ce téléphone n'est pas encore inscrit. Ouvrez le lien d'inscription que vous avez reçu.";
      return;
    }
    show("screen-enrol", false);
    show("screen-main", true);
    (await kvGet("silent") || []).forEach((id) => silentIds.add(id));
    current = (await kvGet("current")) || null;
    visit = (await kvGet("visit")) || null;
    const choice = await kvGet("discreetChoice");
    if (choice) $("discreet-choice").value = choice;
    $("discreet-choice").addEventListener("change", (ev) => kvSet("discreetChoice", ev.target.value));
    holdButton($("sos"), () => raiseAlert(KIND.SOS), true);
    holdButton($("discreet"), () => raiseAlert(KIND.SOS_SILENT), false);
    renderAlert();
    renderVisit();
    if (visit) keepScreenOn(true);
    watchPosition();
    setConn("offline", "Connexion…");
    connect();
    // Back online: a connection that lived through the outage cannot be trusted (its TCP link
    // is often gone while it still looks connected, until the keep-alive notices: up to 45 s).
    // A new one at once, so that what waited in the outbox (an SOS, a visit) leaves now; the
    // outbox keeps every message until the server answers, so nothing is lost by dropping it.
    window.addEventListener("online", () => {
      if (!client || refused) return;
      if (client.connected) client.end(true, {}, () => client.reconnect());
      else client.reconnect();
    });
    // Shown at once; the MQTT connection notices on its own (keep-alive) and reconnects.
    window.addEventListener("offline", () => { if (!refused) setConn("offline", "Hors ligne"); });
  }
  main();
})();
