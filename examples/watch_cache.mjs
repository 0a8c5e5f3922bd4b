// A local copy of every key under a prefix, kept current from kvd's
// change feed (the watch extension): an edge cache that is invalidated
// the moment a value changes, or feature flags read from memory on every
// request and never stale for more than the stream's delay.
//
// The first connection asks for a snapshot: every live key, then a
// "ready" event, then the changes after it, with no gap. Every event
// carries its revision as the SSE id; after a dropped connection the
// cache reconnects from the last revision it applied (Last-Event-ID), so
// it misses nothing and applies nothing twice. A 410 (the revision is
// older than the history kvd keeps) starts again from a snapshot.
//
// Plain fetch (Node 18+, or any edge runtime), no packages. The same
// environment as the quick start: KV_MY_CACHE_ID, TELNYX_API_KEY and
// TELNYX_BASE_URL (with or without /v2). Run as a script,
// `node watch_cache.mjs PREFIX` follows the prefix and, for every line
// read on stdin, prints the cache as one JSON line ({revision, keys}).

import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const KV_NAMESPACE_ID = process.env.KV_MY_CACHE_ID;
const API_KEY = process.env.TELNYX_API_KEY;
const ROOT = (process.env.TELNYX_BASE_URL ?? "https://api.telnyx.com").replace(/\/+$/, "").replace(/\/v2$/, "");
const NS = `${ROOT}/v2/storage/kvs/${KV_NAMESPACE_ID}`;

export class WatchedCache {
  constructor(prefix) {
    this.prefix = prefix;
    this.keys = new Map(); // key -> value: a string, or a Buffer when it is not UTF-8
    this.revision = null; // the last revision applied; null: no snapshot yet
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.stopped = false;
  }

  get(key) {
    return this.keys.get(key);
  }

  // run follows the stream until stop(), reconnecting with backoff.
  async run() {
    let failures = 0;
    while (!this.stopped) {
      try {
        await this.follow();
        failures = 0;
      } catch (err) {
        if (this.stopped) return;
        failures++;
      }
      const ceiling = Math.min(5000, 100 * 2 ** Math.min(failures, 6));
      await new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
    }
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
  }

  // follow reads one connection's events until it ends.
  async follow() {
    const params = new URLSearchParams({ values: "true" });
    if (this.prefix) params.set("prefix", this.prefix);
    const headers = { "Authorization": `Bearer ${API_KEY}`, "Accept": "text/event-stream" };
    const snapshot = this.revision === null;
    if (snapshot) params.set("snapshot", "true");
    else headers["Last-Event-ID"] = String(this.revision);
    this.abort = new AbortController();
    const res = await fetch(`${NS}/watch?${params}`, { headers, signal: this.abort.signal });
    if (res.status === 410) {
      // Too far behind: the history is gone. Start again from a snapshot.
      await res.text();
      this.revision = null;
      throw new Error("history gone; starting again from a snapshot");
    }
    if (!res.ok) throw new Error(`KV watch error: ${res.status} ${await res.text()}`);
    // A snapshot fills a new map, swapped in at "ready": readers never see
    // a half-made copy, and keys deleted meanwhile do not linger.
    let fresh = snapshot ? new Map() : null;
    for await (const ev of events(res.body)) {
      const data = JSON.parse(ev.data);
      const target = fresh ?? this.keys;
      switch (ev.event) {
        case "put":
          if ("value" in data) target.set(data.key, data.value);
          else if ("value_base64" in data) target.set(data.key, Buffer.from(data.value_base64, "base64"));
          else target.set(data.key, await this.read(data.key)); // over 64 KiB: read it
          break;
        case "delete":
        case "expire":
          target.delete(data.key);
          break;
        case "ready":
          if (fresh) {
            this.keys = fresh;
            fresh = null;
          }
          this.revision = data.revision;
          this.markReady();
          continue;
        case "overflow":
          return; // fell behind: reconnect from this.revision
        default:
          continue; // an event this cache does not know
      }
      if (!fresh) this.revision = data.revision;
    }
  }

  async read(key) {
    const res = await fetch(`${NS}/keys/${encodeURIComponent(key)}`, { headers: { "Authorization": `Bearer ${API_KEY}` } });
    if (res.status === 404) {
      await res.text();
      return undefined; // deleted since; its delete event follows
    }
    if (!res.ok) throw new Error(`KV read error: ${res.status}`);
    return await res.text();
  }
}

// events parses a text/event-stream body into {event, data, id} objects;
// comments (": ping") are skipped.
async function* events(body) {
  const decoder = new TextDecoder();
  let buf = "";
  let ev = { event: "message", data: "", id: null };
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") {
        if (ev.data !== "") yield ev;
        ev = { event: "message", data: "", id: null };
      } else if (!line.startsWith(":")) {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") ev.event = value;
        else if (field === "data") ev.data += (ev.data ? "\n" : "") + value;
        else if (field === "id") ev.id = value;
      }
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cache = new WatchedCache(process.argv[2] ?? "");
  cache.run();
  await cache.ready;
  console.log(JSON.stringify({ ready: true }));
  const rl = createInterface({ input: process.stdin });
  for await (const _ of rl) {
    console.log(JSON.stringify({ revision: cache.revision, keys: Object.fromEntries(cache.keys) }));
  }
  cache.stop();
  process.exit(0);
}
