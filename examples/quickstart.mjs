// The quick start's JavaScript from the product documentation, unchanged
// except that BASE is built from TELNYX_BASE_URL (default: the hosted API)
// so that it runs against a local kvd.
//
//   KV_MY_CACHE_ID=<namespace id> TELNYX_API_KEY=dev-key \
//   TELNYX_BASE_URL=http://127.0.0.1:8080 node examples/quickstart.mjs

const KV_NAMESPACE_ID = process.env.KV_MY_CACHE_ID;
const API_KEY = process.env.TELNYX_API_KEY;
const ROOT = (process.env.TELNYX_BASE_URL || "https://api.telnyx.com").replace(/\/+$/, "").replace(/\/v2$/, "");
const BASE = `${ROOT}/v2/storage/kvs/${KV_NAMESPACE_ID}/keys`;

async function kvGet(key) {
  const res = await fetch(`${BASE}/${encodeURIComponent(key)}`, {
    headers: { "Authorization": `Bearer ${API_KEY}` }
  });
  if (res.status === 404) return null; // Key not found
  if (!res.ok) throw new Error(`KV read error: ${res.status}`);
  return await res.text(); // Value is the raw stored bytes
}

async function kvPut(key, value) {
  const res = await fetch(`${BASE}/${encodeURIComponent(key)}`, {
    method: "PUT",
    headers: { "Authorization": `Bearer ${API_KEY}` },
    body: value // Stored verbatim — no base64, no envelope
  });
  if (!res.ok) throw new Error(`KV write error: ${res.status}`);
}

export async function handler(request) {
  // Write a value (UTF-8 is preserved as-is)
  await kvPut("user/123", JSON.stringify({ name: "Alice 👋" }));
  // Read it back -> '{"name":"Alice 👋"}'
  const user = await kvGet("user/123");
  return new Response(user);
}

const res = await handler(new Request("http://localhost/"));
console.log(await res.text());
console.log(await kvGet("possibly-missing-key"));
