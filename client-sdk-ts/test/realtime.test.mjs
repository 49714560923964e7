// Unit tests of the realtime connection with a scripted WebSocket: one
// socket shared by every listener, re-auth on a new token, reconnect with
// resume from the last position, resync handled as a fresh state.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createClient } from "../dist/index.js";
import { FakeSocket } from "../support/fake-socket.mjs";

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));
const doc = (id, n) => ({ id, path: `items/${id}`, version: 1, createTime: "2026-01-01T00:00:00Z", updateTime: "2026-01-01T00:00:00Z", data: { n } });

test("listeners share one socket, which resumes after a drop and closes after the last listener", async () => {
  FakeSocket.all = [];
  const client = createClient({ url: "http://nimbus.invalid", WebSocket: FakeSocket });
  const seen = [];
  const stopQuery = client.collection("items").onSnapshot((s) => seen.push(s.docs.map((d) => d.id)));
  const stopDoc = client.doc("items/a").onSnapshot(() => {});
  await tick();
  assert.equal(FakeSocket.all.length, 1, "one socket for both listeners");
  const [socket] = FakeSocket.all;
  assert.equal(socket.url, "ws://nimbus.invalid/v1/realtime");
  const [query, single] = socket.sent;
  assert.deepEqual([query.type, query.query, single.doc], ["subscribe", { collection: "items" }, "items/a"]);
  socket.serverSends({ type: "snapshot", id: query.id, documents: [doc("a", 1)], position: 5 });
  socket.serverSends({ type: "change", id: query.id, changes: [{ type: "added", document: doc("b", 2) }], position: 7 });
  socket.drop();
  await tick(400);
  assert.equal(FakeSocket.all.length, 2, "reconnected");
  const again = FakeSocket.all[1].sent.find((m) => m.id === query.id);
  assert.equal(again.resumeFrom, 7, "resumes from the last position it received");
  FakeSocket.all[1].serverSends({ type: "resync", id: query.id, reason: "test" });
  FakeSocket.all[1].serverSends({ type: "snapshot", id: query.id, documents: [doc("c", 3)], position: 9 });
  assert.deepEqual(seen, [["a"], ["a", "b"], ["c"]], "a resync's snapshot replaces the state");
  stopQuery();
  assert.equal(FakeSocket.all[1].readyState, 1, "still open for the other listener");
  stopDoc();
  assert.equal(FakeSocket.all[1].readyState, 3, "closed after the last listener");
});

test("a subscription error reaches its listener only", async () => {
  FakeSocket.all = [];
  const client = createClient({ url: "https://nimbus.invalid", WebSocket: FakeSocket });
  const errors = [];
  client.doc("secret/x").onSnapshot(() => {}, (e) => errors.push(e.code));
  const other = [];
  client.doc("public/y").onSnapshot((s) => other.push(s.exists));
  await tick();
  const [socket] = FakeSocket.all;
  assert.equal(socket.url, "wss://nimbus.invalid/v1/realtime");
  const [secret, open] = socket.sent;
  socket.serverSends({ type: "error", id: secret.id, error: { code: "permission-denied", message: "no" } });
  socket.serverSends({ type: "snapshot", id: open.id, documents: [], position: 1 });
  assert.deepEqual([errors, other], [["permission-denied"], [false]]);
});
