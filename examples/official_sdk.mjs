// The official Telnyx Node SDK's KV calls, as its documentation shows them,
// against kvd at its default settings: namespaces, several thousand keys
// with path-like names, a walk of every key with the SDK's own pagination,
// reads, deletes, and a duplicate name (a 409 the SDK must not retry).
// TELNYX_API_KEY and TELNYX_BASE_URL (the API root, with /v2) say where.
import Telnyx from "telnyx";

const client = new Telnyx({ apiKey: process.env.TELNYX_API_KEY, baseURL: process.env.TELNYX_BASE_URL });
const keys = Number(process.env.KEYS ?? "3000");
const name = "sdk-check-" + Date.now();

function fail(msg) {
  console.error(msg);
  process.exit(1);
}

const created = await client.storage.kvs.create({ name });
const id = created.data.id;
for (let i = 0; ; i++) {
  const ns = await client.storage.kvs.retrieve(id);
  if (ns.data.status === "provision_ok") break;
  if (i > 400) fail("the namespace never became ready: " + ns.data.status);
  await new Promise((r) => setTimeout(r, 25));
}

// Writes, 16 at a time.
const want = new Map();
let next = 0;
async function writer() {
  while (next < keys) {
    const i = next++;
    const key = `user/${i % 50}/item-${i}`;
    const value = JSON.stringify({ i });
    await client.storage.kvs.keys.update(key, value, { id });
    want.set(key, value);
  }
}
await Promise.all(Array.from({ length: 16 }, writer));

// The SDK's pagination walks every key once.
const seen = new Set();
for await (const k of client.storage.kvs.keys.list(id, { prefix: "user/" })) {
  if (seen.has(k.key)) fail("listed twice: " + k.key);
  seen.add(k.key);
}
if (seen.size !== keys) fail(`listed ${seen.size} keys, wrote ${keys}`);

// Reads of a sample, byte for byte.
for (const key of [...want.keys()].slice(0, 200)) {
  const resp = await client.storage.kvs.keys.retrieve(key, { id });
  const got = await resp.text();
  if (got !== want.get(key)) fail(`${key}: read ${got}, wrote ${want.get(key)}`);
}

// Deletes, and a read of a deleted key is a 404.
for (const key of [...want.keys()].slice(0, 100)) {
  await client.storage.kvs.keys.delete(key, { id });
}
try {
  await client.storage.kvs.keys.retrieve([...want.keys()][0], { id });
  fail("a deleted key was read");
} catch (e) {
  if (e.status !== 404) fail("reading a deleted key: " + e);
}

// A duplicate name: a 409, which the SDK does not retry.
try {
  await client.storage.kvs.create({ name });
  fail("a duplicate name was accepted");
} catch (e) {
  if (e.status !== 409) fail("a duplicate name: " + e);
}

const list = [];
for await (const ns of client.storage.kvs.list()) list.push(ns.id);
if (!list.includes(id)) fail("the namespace is not listed");
await client.storage.kvs.delete(id);
console.log(`ok: ${keys} keys written, listed, read and deleted through the official SDK`);
