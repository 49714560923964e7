// What an app that uses auth, documents and live queries imports: the bundle
// whose minified + gzipped size docs/benchmarks.md reports (`npm run size`).
import { createClient, serverTimestamp } from "../dist/index.js";

const client = createClient({ url: location.origin, storage: localStorage });
await client.auth.signInAnonymously();
await client.doc("notes/a").set({ at: serverTimestamp() });
client.collection("notes").orderBy("at").onSnapshot((s) => console.log(s.docs.length));
