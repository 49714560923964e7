// Integration tests of the SDK against a running nimbus (started by the
// Rust e2e test `sdk`, which sets NIMBUS_URL and runs these on both backends).
import assert from "node:assert/strict";
import { test } from "node:test";

import { NimbusError, Timestamp, createClient, increment, or, serverTimestamp, where } from "../dist/index.js";

const url = process.env.NIMBUS_URL;
if (!url) throw new Error("NIMBUS_URL is not set: run these through the Rust e2e test `sdk` (scripts/test)");

const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

/** Resolves with the first value `predicate` accepts among those `subscribe` delivers. */
function nextMatching(subscribe, predicate, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no matching snapshot in time")), ms);
    const stop = subscribe((value) => {
      if (predicate(value)) {
        clearTimeout(timer);
        queueMicrotask(() => stop());
        resolve(value);
      }
    });
  });
}

test("sign up, sign out, sign in; listeners may call the SDK", async () => {
  const client = createClient({ url });
  const email = `${unique("u")}@example.com`;
  const seen = [];
  const tokens = [];
  client.auth.onAuthStateChanged(async (user) => {
    seen.push(user?.email ?? null);
    tokens.push(await client.auth.getIdToken());
  });
  const user = await client.auth.signUp({ email, password: "correct horse" });
  assert.equal(user.email, email);
  assert.equal(client.auth.currentUser?.id, user.id);
  await client.auth.signOut();
  assert.equal(client.auth.currentUser, null);
  await client.auth.signIn({ email, password: "correct horse" });
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(seen, [null, email, null, email]);
  assert.equal(tokens.filter(Boolean).length, 2, "getIdToken works inside the listener");
  await assert.rejects(client.auth.signIn({ email, password: "wrong pass" }), (e) => e instanceof NimbusError && e.status === 401);
});

test("an anonymous user links a password and keeps its id", async () => {
  const client = createClient({ url });
  const guest = await client.auth.signInAnonymously();
  assert.equal(guest.anonymous, true);
  const linked = await client.auth.linkWithPassword({ email: `${unique("g")}@example.com`, password: "correct horse" });
  assert.equal(linked.id, guest.id);
  assert.equal(linked.anonymous, false);
});

test("documents: set, get, update, delete, add, queries, counts, timestamps", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const name = unique("items");
  const ref = client.doc(`${name}/a`);
  await ref.set({ n: 1, at: serverTimestamp() });
  let snapshot = await ref.get();
  assert.equal(snapshot.exists, true);
  assert.ok(snapshot.data.at instanceof Timestamp, "timestamps arrive as Timestamp");
  assert.equal(snapshot.data.at.toMillis(), snapshot.updateTime.toMillis());
  await ref.update({ n: increment(2) });
  assert.equal((await ref.get()).data.n, 3);
  await ref.set({ extra: true }, { merge: true });
  assert.deepEqual(Object.keys((await ref.get()).data).sort(), ["at", "extra", "n"]);
  const added = await client.collection(name).add({ n: 5 });
  assert.equal(added.path.startsWith(`${name}/`), true);
  await client.collection(name).doc("c").set({ n: 9 });
  const page = await client.collection(name).where("n", ">", 2).orderBy("n", "desc").limit(2).get();
  assert.deepEqual(page.docs.map((d) => d.data.n), [9, 5]);
  assert.ok(page.nextCursor, "a next page");
  const rest = await client.collection(name).where("n", ">", 2).orderBy("n", "desc").limit(2).startAfter(page.nextCursor).get();
  assert.deepEqual(rest.docs.map((d) => d.data.n), [3]);
  assert.equal(await client.collection(name).where(or(where("n", "==", 3), where("n", "==", 9))).count(), 2);
  await ref.delete();
  snapshot = await ref.get();
  assert.equal(snapshot.exists, false);
  await assert.rejects(client.doc(`${name}/none`).update({ n: 1 }), (e) => e.code === "not-found");
});

test("live queries and documents: snapshot, then added, modified, removed in order", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const name = unique("live");
  await client.doc(`${name}/b`).set({ n: 2 });
  const snapshots = [];
  const stop = client.collection(name).orderBy("n").onSnapshot((s) => snapshots.push(s));
  const docSnapshots = [];
  const stopDoc = client.doc(`${name}/b`).onSnapshot((s) => docSnapshots.push(s));
  const waitFor = async (count) => {
    for (let i = 0; i < 200 && snapshots.length < count; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(snapshots.length >= count, `got ${snapshots.length} snapshots, waited for ${count}`);
  };
  await waitFor(1);
  assert.deepEqual(snapshots[0].docs.map((d) => d.id), ["b"]);
  await client.doc(`${name}/a`).set({ n: 1 });
  await waitFor(2);
  assert.deepEqual(snapshots[1].docs.map((d) => d.id), ["a", "b"]);
  assert.deepEqual(snapshots[1].changes.map((c) => [c.type, c.doc.id, c.newIndex]), [["added", "a", 0]]);
  await client.doc(`${name}/b`).update({ n: 0 });
  await waitFor(3);
  assert.deepEqual(snapshots[2].docs.map((d) => d.id), ["b", "a"], "re-ordered by n");
  assert.deepEqual(snapshots[2].changes.map((c) => [c.type, c.oldIndex, c.newIndex]), [["modified", 1, 0]]);
  await client.doc(`${name}/a`).delete();
  await waitFor(4);
  assert.deepEqual(snapshots[3].changes.map((c) => [c.type, c.doc.id]), [["removed", "a"]]);
  assert.deepEqual(docSnapshots.map((s) => s.data?.n), [2, 0]);
  stop();
  stopDoc();
});

test("latency compensation: own writes show at once, the server's change follows without a second event, a refused write rolls back", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const name = unique("local");
  await client.doc(`${name}/a`).set({ n: 1 });
  const snapshots = [];
  const confirmed = [];
  const stop = client.collection(name).orderBy("n").onSnapshot((s) => snapshots.push(s));
  const stopMetadata = client
    .collection(name)
    .orderBy("n")
    .onSnapshot((s) => confirmed.push(s.metadata.hasPendingWrites), undefined, { includeMetadataChanges: true });
  await nextMatching((cb) => client.collection(name).onSnapshot(cb), (s) => s.docs.length === 1);
  while (snapshots.length < 1 || confirmed.length < 1) await new Promise((r) => setTimeout(r, 10));

  const written = client.doc(`${name}/b`).set({ n: 2 });
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(snapshots[1]?.docs.map((d) => d.id), ["a", "b"], "shown before the server answered");
  assert.equal(snapshots[1].metadata.hasPendingWrites, true);
  await written;
  for (let i = 0; i < 200 && confirmed.at(-1) !== false; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(confirmed, [false, true, false], "the server's change confirms the write");
  assert.equal(snapshots.length, 2, "and is no second event");

  const refused = client.doc(`${name}/c`).set({ n: 3, refuse: true });
  const rejected = assert.rejects(refused, (e) => e instanceof NimbusError && e.code === "permission-denied");
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(snapshots[2]?.docs.map((d) => d.id), ["a", "b", "c"], "the refused write showed at once");
  await rejected;
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(snapshots[3]?.docs.map((d) => d.id), ["a", "b"], "and was rolled back");
  assert.deepEqual(snapshots[3].changes.map((c) => [c.type, c.doc.id, c.oldIndex]), [["removed", "c", 2]]);
  assert.equal(snapshots[3].metadata.hasPendingWrites, false);
  stop();
  stopMetadata();
});

test("tokens refresh by themselves; listeners follow the new token", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const first = await client.auth.getIdToken();
  const name = unique("fresh");
  const live = nextMatching((cb) => client.collection(name).onSnapshot(cb), (s) => s.docs.length === 1);
  // The server issues 10-second tokens here; one is refreshed in its last quarter.
  await new Promise((r) => setTimeout(r, 8000));
  const concurrent = await Promise.all([client.auth.getIdToken(), client.auth.getIdToken(), client.auth.getIdToken()]);
  assert.notEqual(concurrent[0], first, "refreshed before expiry");
  assert.equal(new Set(concurrent).size, 1, "concurrent refreshes collapse into one");
  await client.doc(`${name}/x`).set({ v: 1 });
  assert.equal((await live).docs[0].id, "x");
});

test("functions.call reaches the gateway with the user's token", async () => {
  const client = createClient({ url });
  const guest = await client.auth.signInAnonymously();
  assert.deepEqual(await client.functions.call("/whoami"), { uid: guest.id });
  await assert.rejects(client.functions.call("/missing"), (e) => e instanceof NimbusError && e.status === 404);
});

test("a batch commits every write or none", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const name = unique("batch");
  await client.batch().set(client.doc(`${name}/a`), { n: 1 }).create(client.doc(`${name}/b`), { n: 2 }).commit();
  assert.equal(await client.collection(name).count(), 2);
  const failing = client.batch().delete(client.doc(`${name}/a`)).create(client.doc(`${name}/b`), { n: 3 });
  await assert.rejects(failing.commit(), (e) => e instanceof NimbusError && e.code === "already-exists");
  assert.equal((await client.doc(`${name}/a`).get()).exists, true, "nothing of a refused batch is applied");
});

test("collection groups span every collection with the id", async () => {
  const client = createClient({ url });
  await client.auth.signInAnonymously();
  const id = unique("notes").replace(/-/g, "_");
  await client.doc(`${id}/top`).set({ n: 1 });
  await client.doc(`posts/p1/${id}/nested`).set({ n: 2 });
  const { docs } = await client.collectionGroup(id).orderBy("n").get();
  assert.deepEqual(docs.map((d) => d.path), [`${id}/top`, `posts/p1/${id}/nested`]);
});
