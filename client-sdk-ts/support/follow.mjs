// Follows a collection and prints one line per snapshot: the ids it holds,
// comma-separated, and whether it came with a change. Used by the e2e test
// that restarts the server under a live listener (tests/e2e/sdk.rs).
// Usage: NIMBUS_URL=… node --experimental-websocket support/follow.mjs <collection> <ids to wait for>
import { createClient } from "../dist/index.js";

const [collection, expected] = process.argv.slice(2);
const client = createClient({ url: process.env.NIMBUS_URL });
await client.auth.signInAnonymously();
const stop = client.collection(collection).onSnapshot(
  (snapshot) => {
    const ids = snapshot.docs.map((d) => d.id);
    console.log(`ids ${ids.join(",")} changes ${snapshot.changes.map((c) => `${c.type}:${c.doc.id}`).join(",")}`);
    if (ids.length >= Number(expected)) {
      stop();
      process.exit(0);
    }
  },
  (error) => {
    console.log(`error ${error.code} ${error.message}`);
    process.exit(1);
  },
);
setTimeout(() => {
  console.log("timeout");
  process.exit(2);
}, 30_000);
