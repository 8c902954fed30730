/* Vigie worker app: service worker. The app shell is cached at install so that the app opens
 * and an alert can be pressed (and kept) without network; pages and files are fetched from the
 * network first, so an update is never hidden by the cache, and from the cache when offline.
 * Nothing under /app/api/ is ever cached. */
"use strict";
const CACHE = "vigie-app-v2";
const SHELL = [
  "/app/",
  "/app/limites",
  "/app/manifest.webmanifest",
  "/app/static/app.css",
  "/app/vocabulary.js",
  "/app/static/app.js",
  "/app/static/icon.svg",
  "/app/static/icon-192.png",
  "/app/static/vendor/mqtt/mqtt.min.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith("/app/") || url.pathname.startsWith("/app/api/")) return;
  event.respondWith(
    fetch(req)
      .then((res) => {
        if (res.ok && !url.search) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(req, copy));
        }
        return res;
      })
      .catch(() =>
        caches.match(req, { ignoreSearch: true }).then((hit) => {
          if (hit) return hit;
          // /app/enrol?code=… offline: the app itself explains that it needs the network.
          if (req.mode === "navigate") return caches.match("/app/");
          return Response.error();
        })));
});
