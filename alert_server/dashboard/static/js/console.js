/* Vigie — console des opérateurs: clock and timers, the live stream and its watchdog, the
   alarm (sound + banner) while any visible alert is waiting for someone to take it.

   The console watches itself: when the stream drops (server stopped, network cut, silent
   proxy), a banner says so at once, the page reconnects by itself and catches up from the
   last event it saw (Last-Event-ID), then the banner goes. No inline script anywhere: the
   Content-Security-Policy forbids it. */
(function () {
  "use strict";

  var body = document.body;
  var prefix = body.dataset.prefix || "/dashboard";
  // The shared vocabulary (vigie/vocabulary.py), given by the server with the page: states,
  // kinds and message types are never spelled in the scripts.
  var words = JSON.parse(document.getElementById("vocabulary").textContent);
  var OPEN = words.AlertState.OPEN;
  var handlers = {};

  function on(name, fn) {
    (handlers[name] = handlers[name] || []).push(fn);
  }

  function emit(name, data) {
    (handlers[name] || []).forEach(function (fn) {
      try {
        fn(data);
      } catch (err) {
        if (window.console) window.console.error(err);
      }
    });
  }

  // ---- time: the server's clock, so that timers agree with the database -------------------
  var offsetMs = 0;

  function setServerNow(iso) {
    var t = Date.parse(iso);
    if (!isNaN(t)) offsetMs = t - Date.now();
  }

  function now() {
    return Date.now() + offsetMs;
  }

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function elapsed(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = s % 60;
    if (h) return h + " h " + pad(m) + " min";
    if (m) return m + " min " + pad(sec) + " s";
    return sec + " s";
  }

  setServerNow(body.dataset.serverNow);
  var clock = document.getElementById("clock");
  var parisTime = new Intl.DateTimeFormat("fr-FR", {
    timeZone: "Europe/Paris",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  function tick() {
    if (clock) clock.textContent = parisTime.format(new Date(now()));
    var timers = document.querySelectorAll("[data-since]");
    for (var i = 0; i < timers.length; i++) {
      var t = Date.parse(timers[i].dataset.since);
      if (!isNaN(t)) timers[i].textContent = elapsed(now() - t);
    }
  }
  setInterval(tick, 1000);
  tick();

  // ---- the alarm ------------------------------------------------------------------------
  // Browsers refuse to play sound before the page has had a click or a key press (autoplay
  // policy): after a reload, a bookmark or a browser restart the alarm would be silent. The
  // console checks on load and, while the browser will not play sound, covers the page with
  // a blocking "Cliquez pour activer l'alarme sonore" until one click unlocks it.
  var openIds = new Set();
  var duressIds = new Set();
  try {
    JSON.parse(document.getElementById("open-alerts").textContent || "[]").forEach(function (id) {
      openIds.add(id);
    });
  } catch (err) {
    /* no list: the stream fills it */
  }
  var audio = null;
  var beepTimer = null;
  var blinkTimer = null;
  var alarmBanner = document.getElementById("alarm-banner");
  var alarmCount = document.getElementById("alarm-count");
  var soundButton = document.getElementById("sound-button");
  var soundGate = document.getElementById("sound-gate");
  var favicon = document.getElementById("favicon");
  var baseTitle = document.title;
  var alarm = { beeps: 0, attempts: 0, blinks: 0, notifications: 0, expired: false };

  function audioRunning() {
    return audio !== null && audio.state === "running";
  }

  function showSoundState() {
    var on = audioRunning();
    if (soundButton) {
      soundButton.dataset.state = on ? "on" : "off";
      soundButton.textContent = on ? "Son actif" : "Son coupé : activer";
    }
    if (soundGate) soundGate.hidden = on;
    body.dataset.sound = on ? "on" : "off";
  }

  function unlockAudio() {
    try {
      if (audio === null) {
        var Ctx = window.AudioContext || window.webkitAudioContext;
        if (!Ctx) return;
        audio = new Ctx();
        audio.onstatechange = showSoundState;
      }
      if (audio.state !== "running") audio.resume().then(showSoundState, showSoundState);
    } catch (err) {
      /* no audio device: the visual alarm remains */
    }
    showSoundState();
  }
  document.addEventListener("click", unlockAudio, true);
  document.addEventListener("keydown", unlockAudio, true);
  if (soundButton) {
    soundButton.addEventListener("click", function () {
      unlockAudio();
      beep();
    });
  }
  if (soundGate) {
    document.getElementById("sound-gate-button").addEventListener("click", function () {
      unlockAudio();
      askNotifications();
      beep();
    });
  }

  function beep() {
    alarm.attempts++;
    if (!audioRunning()) {
      showSoundState();
      return;
    }
    var t0 = audio.currentTime;
    [0, 0.28].forEach(function (delay, i) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = i === 0 ? 880 : 660;
      gain.gain.setValueAtTime(0.0001, t0 + delay);
      gain.gain.exponentialRampToValueAtTime(0.25, t0 + delay + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t0 + delay + 0.22);
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start(t0 + delay);
      osc.stop(t0 + delay + 0.24);
    });
    alarm.beeps++;
  }

  // ---- desktop notifications: asked once, used for every new alert and every duress ------
  var ASKED_KEY = "vigie.notifications.asked";

  function askNotifications() {
    if (!("Notification" in window) || Notification.permission !== "default") return;
    try {
      if (window.localStorage.getItem(ASKED_KEY)) return;
      window.localStorage.setItem(ASKED_KEY, new Date().toISOString());
    } catch (err) {
      /* private mode: ask anyway */
    }
    try {
      var asked = Notification.requestPermission();
      if (asked && asked.then) asked.then(function () {}, function () {});
    } catch (err) {
      /* old browsers: callback form only */
    }
  }

  function notify(title, text, tag) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      var n = new Notification(title, { body: text, tag: tag, requireInteraction: true });
      n.onclick = function () {
        window.focus();
        window.location.href = prefix + "/alerts/" + encodeURIComponent(tag.split(":")[0]);
      };
      alarm.notifications++;
    } catch (err) {
      /* notifications unavailable (e.g. service-worker-only platforms): sound and banner */
    }
  }

  // ---- title and favicon blink while anything waits --------------------------------------
  function setFavicon(alerting) {
    if (!favicon) return;
    var href = alerting ? body.dataset.faviconAlert : body.dataset.favicon;
    if (href && favicon.getAttribute("href") !== href) favicon.setAttribute("href", href);
  }

  function blink() {
    alarm.blinks++;
    var n = openIds.size;
    var on = alarm.blinks % 2 === 1;
    if (alarm.expired && n === 0) {
      document.title = on ? "SESSION EXPIRÉE — Vigie" : baseTitle;
    } else {
      // The count stays first (a tab strip shows only the start), the rest blinks.
      document.title = "(" + n + ") ALERTE — " + (on ? baseTitle : "⚠ EN ATTENTE ⚠");
    }
    setFavicon(on);
  }

  function refreshAlarm() {
    var n = openIds.size;
    var ringing = n > 0 || alarm.expired;
    if (alarmBanner) alarmBanner.hidden = n === 0;
    if (alarmCount) alarmCount.textContent = String(n);
    body.classList.toggle("alarm", n > 0);
    if (ringing) {
      if (blinkTimer === null) {
        alarm.blinks = 0;
        blink();
        blinkTimer = setInterval(blink, 1000);
      }
    } else {
      if (blinkTimer !== null) clearInterval(blinkTimer);
      blinkTimer = null;
      document.title = baseTitle;
      setFavicon(false);
    }
    // The alarm repeats until someone takes the alert (or the session is back).
    if (ringing && beepTimer === null) {
      beep();
      beepTimer = setInterval(beep, 2500);
    } else if (!ringing && beepTimer !== null) {
      clearInterval(beepTimer);
      beepTimer = null;
    }
  }

  alarm.update = function (alertId, state, data) {
    var isNew = state === OPEN && !openIds.has(alertId);
    var newDuress = !!(data && data.duress) && !duressIds.has(alertId);
    if (state === OPEN) openIds.add(alertId);
    else openIds.delete(alertId);
    if (data && data.duress) duressIds.add(alertId);
    var what = (data && data.label) || "Alerte";
    if (newDuress) {
      notify("CONTRAINTE — " + what, "Le travailleur est menacé : ne pas rappeler le boîtier.", alertId + ":duress");
    } else if (isNew) {
      notify("Nouvelle alerte — " + what, "En attente de prise en charge.", alertId + ":new");
    }
    refreshAlarm();
  };
  alarm.reset = function (ids) {
    openIds = new Set(ids);
    refreshAlarm();
  };
  alarm.openCount = function () {
    return openIds.size;
  };

  // ---- the session: renewed while the page is open; a real expiry is loud ---------------
  var RENEW_MS = 60000;
  var sessionBanner = document.getElementById("session-banner");
  var sessionLogin = document.getElementById("session-login");
  var session = { renewals: 0, timer: null };

  function sessionExpired() {
    if (alarm.expired) return;
    alarm.expired = true;
    if (live.source) live.source.close();
    if (sessionBanner) sessionBanner.hidden = false;
    if (sessionLogin) {
      sessionLogin.href =
        prefix + "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    }
    body.classList.add("expired");
    refreshAlarm();
  }

  function sessionBack() {
    if (!alarm.expired) return;
    alarm.expired = false;
    if (sessionBanner) sessionBanner.hidden = true;
    body.classList.remove("expired");
    refreshAlarm();
    // A new login has a new anti-forgery token: reload once the page can be trusted again.
    window.location.reload();
  }

  session.renew = function () {
    if (alarm.expired) {
      return fetch(prefix + "/session", { credentials: "same-origin", cache: "no-store" }).then(
        function (resp) {
          if (resp.status === 204) sessionBack();
        },
        function () {}
      );
    }
    return fetch(prefix + "/session", {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-CSRF-Token": body.dataset.csrf || "" },
    }).then(
      function (resp) {
        if (resp.status === 401 || resp.status === 403) sessionExpired();
        else if (resp.ok) session.renewals++;
      },
      function () {
        /* server unreachable: the connection banner says so; try again later */
      }
    );
  };

  // ---- the live stream ------------------------------------------------------------------
  var WATCHDOG_MS = 25000; // the server sends something at least every 10 s
  var statusEl = document.getElementById("live-status");
  var lostBanner = document.getElementById("connection-banner");
  var live = {
    lastId: body.dataset.cursor || "0",
    source: null,
    lost: false,
    opened: false,
    lastMessageAt: Date.now(),
    retryTimer: null,
    retryDelayMs: 1000,
    unloading: false,
    connections: 0,
  };
  var LABELS = { live: "● En direct", connecting: "● Connexion…", lost: "● Connexion perdue" };

  function setState(state) {
    if (statusEl) {
      statusEl.dataset.state = state;
      statusEl.textContent = LABELS[state];
    }
    if (lostBanner) lostBanner.hidden = state !== "lost";
    body.classList.toggle("disconnected", state === "lost");
  }

  function markLost() {
    if (live.unloading || live.lost) return;
    live.lost = true;
    setState("lost");
  }

  function streamUrl() {
    var base = body.dataset.stream;
    return base + (base.indexOf("?") >= 0 ? "&" : "?") + "last_id=" + encodeURIComponent(live.lastId);
  }

  function connect() {
    if (live.source) live.source.close();
    live.lastMessageAt = Date.now();
    var source = new EventSource(streamUrl());
    live.source = source;
    source.addEventListener("hello", function (ev) {
      var data = JSON.parse(ev.data);
      setServerNow(data.server_now);
      live.lastMessageAt = Date.now();
      live.retryDelayMs = 1000;
      live.connections++;
      var again = live.opened;
      live.opened = true;
      live.lost = false;
      setState("live");
      // Catch-up after an outage: the stream replays what changed since Last-Event-ID, and
      // the page re-reads its lists for anything that left its scope meanwhile.
      if (again) emit("reconnected", data);
    });
    source.addEventListener("alert", function (ev) {
      live.lastMessageAt = Date.now();
      if (ev.lastEventId) live.lastId = ev.lastEventId;
      var data = JSON.parse(ev.data);
      alarm.update(data.alert_id, data.state, data);
      emit("alert", data);
    });
    source.addEventListener("ping", function (ev) {
      live.lastMessageAt = Date.now();
      setServerNow(JSON.parse(ev.data).server_now);
    });
    source.addEventListener("session", function () {
      source.close();
      sessionExpired();
    });
    source.onerror = function () {
      markLost();
      // CONNECTING: the browser retries by itself (retry: 1 s) and sends Last-Event-ID.
      // CLOSED: it gave up (an HTTP error, e.g. a proxy's 502 or our 401); we take over.
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (live.retryTimer !== null || live.unloading || alarm.expired) return;
    if (live.source) live.source.close();
    var delay = live.retryDelayMs;
    live.retryDelayMs = Math.min(live.retryDelayMs * 2, 5000);
    live.retryTimer = setTimeout(function () {
      live.retryTimer = null;
      fetch(prefix + "/session", { credentials: "same-origin", cache: "no-store" }).then(
        function (resp) {
          if (resp.status === 401) sessionExpired();
          else connect();
        },
        function () {
          scheduleReconnect();
        }
      );
    }, delay);
  }

  // A connection can die silently (half-open TCP, a proxy holding it): no message for too
  // long is a lost connection too.
  setInterval(function () {
    if (!alarm.expired && Date.now() - live.lastMessageAt > WATCHDOG_MS) {
      markLost();
      live.lastMessageAt = Date.now();
      scheduleReconnect();
    }
  }, 2000);

  window.addEventListener("pagehide", function () {
    live.unloading = true;
    if (live.source) live.source.close();
  });

  window.Vigie = {
    on: on,
    now: now,
    elapsed: elapsed,
    alarm: alarm,
    live: live,
    session: session,
    prefix: prefix,
    words: words,
  };

  refreshAlarm();
  unlockAudio();
  // The check after load: a context that is still suspended will not ring (the gate shows).
  setTimeout(showSoundState, 300);
  askNotifications();
  session.timer = setInterval(session.renew, RENEW_MS);
  if (body.dataset.stream) connect();
})();
