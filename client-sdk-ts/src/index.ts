/**
 * The Nimbus client: `createClient({ url })` → `auth`, documents and queries
 * with live `onSnapshot`, and `functions.call`. Zero runtime dependencies:
 * the platform's `fetch` and `WebSocket`.
 */

export { createClient, type ClientOptions, type NimbusClient } from "./client.js";
export { Auth, MemoryStorage, type Storage, type User } from "./auth.js";
export {
  CollectionReference,
  DocumentReference,
  Query,
  WriteBatch,
  and,
  or,
  where,
  type Clause,
  type DocumentData,
  type DocumentSnapshot,
  type DocumentChange,
  type ListenOptions,
  type SnapshotMetadata,
  type Operator,
  type QuerySnapshot,
} from "./documents.js";
export { NimbusError } from "./errors.js";
export { Timestamp, arrayRemove, arrayUnion, deleteField, increment, serverTimestamp } from "./values.js";
