// The documentation's session counter ("Session Storage with Expiry"),
// written so that concurrent views of one session are never lost.
//
// The documented handler reads the session, adds one to `views` and writes
// it back. Two requests of one session at once both read the same views and
// both write views + 1: one view is lost, and under load most are. Here the
// write carries the ETag the read returned (If-Match); when another request
// wrote the session in between, kvd answers 412 and writes nothing, and the
// handler reads again and retries after a short random backoff. A new
// session is created with If-None-Match: *, so two first views cannot both
// create it. The expiry is kvd's own (ttl_secs) rather than an envelope in
// the value.
//
// Plain fetch (Node 18+, or any edge runtime), no packages. The same
// environment as the quick start: KV_MY_CACHE_ID, TELNYX_API_KEY and
// TELNYX_BASE_URL (with or without /v2). Run as a script,
// `node session_counter.mjs SESSION_ID` counts one view and prints the
// session.

import { pathToFileURL } from "node:url";

const KV_NAMESPACE_ID = process.env.KV_MY_CACHE_ID;
const API_KEY = process.env.TELNYX_API_KEY;
const ROOT = (process.env.TELNYX_BASE_URL ?? "https://api.telnyx.com").replace(/\/+$/, "").replace(/\/v2$/, "");
const BASE = `${ROOT}/v2/storage/kvs/${KV_NAMESPACE_ID}/keys`;

const SESSION_TTL = 86400; // 24 hours
const MAX_ATTEMPTS = 100;

// kvGetVersioned reads a key with its ETag: { value, etag }, or null when
// the key does not exist (or has expired).
async function kvGetVersioned(key) {
  const res = await fetch(`${BASE}/${encodeURIComponent(key)}`, {
    headers: { "Authorization": `Bearer ${API_KEY}` },
  });
  if (res.status === 404) {
    await res.text(); // read to the end, so the connection is reused
    return null;
  }
  if (!res.ok) throw new Error(`KV read error: ${res.status} ${await res.text()}`);
  const etag = res.headers.get("ETag");
  if (etag === null) {
    // A service without ETags has no conditional writes either: the
    // If-Match below would be ignored, and views lost.
    await res.text();
    throw new Error("KV read error: no ETag; this service does not support conditional writes");
  }
  return { value: await res.text(), etag };
}

// kvPutIf writes value only if the key still has the ETag etag (null: only
// if the key does not exist). It returns false when another write came
// first (412): nothing was written.
async function kvPutIf(key, value, etag, ttlSecs) {
  const res = await fetch(`${BASE}/${encodeURIComponent(key)}?ttl_secs=${ttlSecs}`, {
    method: "PUT",
    headers: {
      "Authorization": `Bearer ${API_KEY}`,
      "Content-Type": "application/json",
      ...(etag === null ? { "If-None-Match": "*" } : { "If-Match": etag }),
    },
    body: value,
  });
  await res.text();
  if (res.status === 412) return false;
  if (!res.ok) throw new Error(`KV write error: ${res.status}`);
  return true;
}

// Full jitter: a random wait up to eight times what the attempt took (at
// least 1 ms), doubling each attempt, at most a second.
function backoff(attempt, took) {
  const ceiling = Math.min(1000, Math.max(1, 8 * took) * 2 ** attempt);
  return new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
}

// viewSession counts one view of the session and returns it as stored. A
// request that fails (a network error, a 5xx) is not retried: whether its
// write landed is unknown, and writing again could count the view twice.
export async function viewSession(sessionId) {
  const key = `session/${sessionId}`;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const began = Date.now();
    const current = await kvGetVersioned(key);
    let session;
    if (current === null) {
      session = JSON.stringify({ created: Date.now(), views: 0 });
    } else {
      const data = JSON.parse(current.value);
      data.views++;
      session = JSON.stringify(data);
    }
    if (await kvPutIf(key, session, current?.etag ?? null, SESSION_TTL)) {
      return session;
    }
    // Another view came first: wait a little, read it and count again.
    await backoff(attempt, Date.now() - began);
  }
  throw new Error(`session ${sessionId}: ${MAX_ATTEMPTS} attempts in a row conflicted`);
}

export async function handler(request) {
  const sessionId = request.headers.get("X-Session-ID");
  const session = await viewSession(sessionId);
  return new Response(session, { headers: { "Content-Type": "application/json" } });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(await viewSession(process.argv[2] ?? "abc"));
}
