// Unit tests of latency compensation and the offline queue, with a scripted
// server (fetch) and a scripted WebSocket: writes show at once as pending,
// the server's change is no second event, a refused write is rolled back,
// and writes made while the server is unreachable go out in order later.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Timestamp, arrayUnion, createClient, deleteField, increment, serverTimestamp } from "../dist/index.js";
import { FakeSocket } from "../support/fake-socket.mjs";

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));
const wire = (id, data, version = 1) => ({
  id,
  path: `items/${id}`,
  version,
  createTime: "2026-01-01T00:00:00.000000Z",
  updateTime: "2026-01-01T00:00:00.000000Z",
  data,
});

/** A scripted server: `answer(method, path, body)` → [status, body], or throws to stand for an unreachable server. */
function serve(answer) {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ method: init.method, path, body, headers: init.headers });
    const [status, reply] = answer(init.method, path, body, init.headers);
    return new Response(reply === undefined ? null : JSON.stringify(reply), { status });
  };
  return calls;
}

/** A client with a live query on `items` (ordered by n) whose server snapshot holds `documents`. */
async function listening(documents, options = {}) {
  FakeSocket.all = [];
  const client = createClient({ url: "http://nimbus.invalid", WebSocket: FakeSocket });
  const seen = [];
  client.collection("items").orderBy("n").onSnapshot((s) => seen.push(s), undefined, options);
  await tick();
  const socket = FakeSocket.all[0];
  const subscription = socket.sent.find((m) => m.type === "subscribe");
  socket.serverSends({ type: "snapshot", id: subscription.id, documents, position: 1 });
  return { client, seen, socket, id: subscription.id };
}

test("a write shows at once as pending; the server's change of it is no second event", async () => {
  serve((method, path, body) => [201, wire(path.split("/").pop(), body)]);
  const { client, seen, socket, id } = await listening([wire("a", { n: 1 })]);
  const metadataToo = [];
  client.collection("items").orderBy("n").onSnapshot((s) => metadataToo.push(s.metadata.hasPendingWrites), undefined, {
    includeMetadataChanges: true,
  });
  await tick();
  const second = socket.sent.filter((m) => m.type === "subscribe")[1];
  socket.serverSends({ type: "snapshot", id: second.id, documents: [wire("a", { n: 1 })], position: 1 });

  const written = client.doc("items/b").set({ n: 2 });
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(seen.length, 2, "shown before the server answered");
  assert.deepEqual(seen[1].docs.map((d) => [d.id, d.metadata.hasPendingWrites]), [["a", false], ["b", true]]);
  assert.equal(seen[1].metadata.hasPendingWrites, true);
  assert.deepEqual(seen[1].changes.map((c) => [c.type, c.doc.id, c.oldIndex, c.newIndex]), [["added", "b", -1, 1]]);
  await written;
  socket.serverSends({ type: "change", id, changes: [{ type: "added", document: wire("b", { n: 2 }) }], position: 2 });
  socket.serverSends({ type: "change", id: second.id, changes: [{ type: "added", document: wire("b", { n: 2 }) }], position: 2 });
  await tick();
  assert.equal(seen.length, 2, "the confirmation with the same data is not a second event");
  assert.deepEqual(metadataToo, [false, true, false], "listeners that ask see the write confirmed");
});

test("a refused write is rolled back in the listeners and its promise rejects", async () => {
  serve(() => [403, { error: { code: "permission-denied", message: "not yours" } }]);
  const { client, seen } = await listening([wire("a", { n: 1 })]);
  await assert.rejects(client.doc("items/z").set({ n: 0 }), (e) => e.code === "permission-denied" && e.status === 403);
  await tick();
  await assert.rejects(client.doc("items/a").update({ n: 5 }), (e) => e.code === "permission-denied");
  await tick();
  const steps = seen.map((s) => s.docs.map((d) => `${d.id}:${d.data.n}`).join(","));
  assert.deepEqual(steps, ["a:1", "z:0,a:1", "a:1", "a:5", "a:1"], "each refused write is taken back");
  assert.deepEqual(seen.at(-1).changes.map((c) => [c.type, c.doc.id]), [["modified", "a"]]);
  assert.equal(seen.at(-1).metadata.hasPendingWrites, false);
});

test("writes made while the server is unreachable wait and go out in order, once each", async () => {
  let reachable = false;
  const calls = serve((method, path, body) => {
    if (!reachable) throw new TypeError("fetch failed");
    return method === "DELETE" ? [204] : [200, wire(path.split("/").pop(), body, 2)];
  });
  const { client, seen, socket } = await listening([wire("a", { n: 1 })]);
  socket.drop();
  const done = [];
  const writes = [
    client.doc("items/b").set({ n: 2 }).then(() => done.push("b")),
    client.doc("items/a").update({ n: 3 }).then(() => done.push("a")),
    client.doc("items/b").delete().then(() => done.push("delete b")),
  ];
  await tick(50);
  assert.deepEqual(done, [], "nothing is acknowledged while unreachable");
  assert.deepEqual(seen.at(-1).docs.map((d) => `${d.id}:${d.data.n}`), ["a:3"], "listeners show the queued writes");
  assert.deepEqual(seen.at(-1).metadata, { hasPendingWrites: true, fromCache: true }, "from memory while disconnected");
  assert.equal(new Set(calls.map((c) => c.path)).size, 1, "only the first write is tried while unreachable");
  const firstOnline = calls.length;
  reachable = true;
  await tick(400);
  await Promise.all(writes);
  assert.deepEqual(done, ["b", "a", "delete b"], "sent in the order made");
  assert.deepEqual(
    calls.slice(firstOnline).map((c) => `${c.method} ${c.path}`),
    ["PUT /v1/docs/items/b", "PATCH /v1/docs/items/a", "DELETE /v1/docs/items/b"],
    "each write reached the server once",
  );
});

test("a document listener shows its own writes and takes a refused one back", async () => {
  let allow = true;
  serve((method, path, body) => (allow ? [200, wire("d", body, 2)] : [403, { error: { code: "permission-denied", message: "no" } }]));
  FakeSocket.all = [];
  const client = createClient({ url: "http://nimbus.invalid", WebSocket: FakeSocket });
  const seen = [];
  client.doc("items/d").onSnapshot((s) => seen.push([s.exists ? s.data.n : null, s.metadata.hasPendingWrites]));
  await tick();
  const [socket] = FakeSocket.all;
  const { id } = socket.sent.find((m) => m.type === "subscribe");
  socket.serverSends({ type: "snapshot", id, documents: [wire("d", { n: 1 })], position: 1 });
  await client.doc("items/d").set({ n: 2 });
  socket.serverSends({ type: "change", id, changes: [{ type: "modified", document: wire("d", { n: 2 }, 2) }], position: 2 });
  allow = false;
  await assert.rejects(client.doc("items/d").delete());
  await tick();
  assert.deepEqual(seen, [[1, false], [2, true], [null, true], [2, false]]);
});

test("transforms are applied locally the way the server applies them", async () => {
  serve(() => {
    throw new TypeError("fetch failed");
  });
  const { client, seen } = await listening([wire("a", { n: 1, tags: ["x"], gone: true, nested: { keep: 1 } })]);
  const before = Date.now();
  void client.doc("items/a").update({ count: increment(2), tags: arrayUnion("x", "y"), gone: deleteField(), at: serverTimestamp(), nested: { add: 2 } });
  void client.doc("items/a").update({ count: increment(3) });
  await tick();
  const data = seen.at(-1).docs[0].data;
  assert.equal(data.count, 5);
  assert.deepEqual(data.tags, ["x", "y"]);
  assert.equal("gone" in data, false);
  assert.deepEqual(data.nested, { keep: 1, add: 2 }, "nested maps merge field by field");
  assert.ok(data.at instanceof Timestamp && data.at.toMillis() >= before, "a server time is estimated by the clock");
});
