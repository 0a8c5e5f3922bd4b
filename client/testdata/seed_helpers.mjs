// The KV helpers of the service's documentation (Quick Start and Key
// expiration), copied verbatim; only BASE is built from the environment
// instead of naming the hosted API. A small driver at the end runs a JSON
// list of operations given as argv[2] and prints their results as JSON.

const KV_NAMESPACE_ID = process.env.KV_MY_CACHE_ID;
const API_KEY = process.env.TELNYX_API_KEY;
const BASE = `${process.env.TELNYX_BASE_URL.replace(/\/v2\/?$/, "")}/v2/storage/kvs/${KV_NAMESPACE_ID}/keys`;

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

// Built on the raw kvGet/kvPut from the Quick Start.
async function kvPutWithExpiry(key, value, ttlSeconds) {
  const envelope = JSON.stringify({
    value,
    expires_at: Date.now() + ttlSeconds * 1000,
  });
  await kvPut(key, envelope);
}

async function kvGetWithExpiry(key) {
  const raw = await kvGet(key);
  if (raw === null) return null; // key not found
  const { value, expires_at } = JSON.parse(raw);
  if (Date.now() > expires_at) {
    await kvDelete(key); // lazily clean up
    return null; // expired
  }
  return value;
}

// kvDelete helper
async function kvDelete(key) {
  await fetch(`${BASE}/${encodeURIComponent(key)}`, {
    method: "DELETE",
    headers: { "Authorization": `Bearer ${API_KEY}` },
  });
}

// Driver: argv[2] is a JSON array of [op, ...args]; the output is a JSON
// array of results, one per operation.
const ops = {
  put: (key, value) => kvPut(key, value).then(() => null),
  get: (key) => kvGet(key),
  putWithExpiry: (key, value, ttlSeconds) => kvPutWithExpiry(key, value, ttlSeconds).then(() => null),
  getWithExpiry: (key) => kvGetWithExpiry(key),
  stringify: (value, expires_at) => JSON.stringify({ value, expires_at }),
};
const results = [];
for (const [op, ...args] of JSON.parse(process.argv[2])) {
  results.push(await ops[op](...args));
}
process.stdout.write(JSON.stringify(results));
