/**
 * `createClient`: one client per server, holding the session, the realtime
 * connection and the references made from it. Requests carry the current
 * token; a `401` refreshes the token once and tries again.
 */

import { Auth, MemoryStorage, type Storage } from "./auth.js";
import {
  type Backend,
  CollectionReference,
  type DocumentData,
  DocumentReference,
  type Query,
  WriteBatch,
  collectionGroup,
} from "./documents.js";
import { errorFrom } from "./errors.js";
import { Http } from "./http.js";
import { LocalWrites } from "./local.js";
import { Realtime, type WebSocketClass } from "./realtime.js";

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:8090`. */
  url: string;
  /** Where the session is kept (memory by default; pass `localStorage` in a browser). */
  storage?: Storage;
  /** A WebSocket class, where the platform has none (Node 20 without `--experimental-websocket`). */
  WebSocket?: WebSocketClass;
}

export interface NimbusClient {
  auth: Auth;
  doc<T = DocumentData>(path: string): DocumentReference<T>;
  collection<T = DocumentData>(path: string): CollectionReference<T>;
  collectionGroup<T = DocumentData>(id: string): Query<T>;
  /** Writes that commit together: `batch().set(…).delete(…).commit()`. */
  batch(): WriteBatch;
  functions: { call<R = unknown>(path: string, body?: unknown, options?: { method?: string }): Promise<R> };
}

export function createClient(options: ClientOptions): NimbusClient {
  const http = new Http(options.url);
  const auth = new Auth(http, options.storage ?? new MemoryStorage());
  const writes = new LocalWrites(() => realtime.connected);
  const realtime = new Realtime(http.base, options.WebSocket, () => auth.getIdToken(), () => writes.wake());
  auth.onTokenChanged(() => void realtime.reauthenticate());
  (globalThis as { addEventListener?: (type: string, listener: () => void) => void }).addEventListener?.(
    "online",
    () => writes.wake(),
  );

  const request = async (method: string, path: string, body?: unknown, headers?: Record<string, string>) => {
    const answer = await http.send(method, path, body, await auth.getIdToken(), headers);
    if (answer.status !== 401 || !auth.currentUser) return answer;
    return http.send(method, path, body, await auth.getIdToken(true), headers);
  };
  const backend: Backend = {
    request,
    async expect(method, path, body, headers) {
      const answer = await request(method, path, body, headers);
      if (answer.status >= 200 && answer.status < 300) return answer.body;
      throw errorFrom(answer.status, answer.body);
    },
    realtime,
    writes,
  };
  return {
    auth,
    doc: <T = DocumentData>(path: string) => new DocumentReference<T>(backend, path.replace(/^\/+|\/+$/g, "")),
    collection: <T = DocumentData>(path: string) =>
      new CollectionReference<T>(backend, path.replace(/^\/+|\/+$/g, "")),
    collectionGroup: <T = DocumentData>(id: string) => collectionGroup<T>(backend, id),
    batch: () => new WriteBatch(backend),
    functions: {
      async call<R = unknown>(path: string, body?: unknown, callOptions: { method?: string } = {}): Promise<R> {
        const method = callOptions.method ?? (body === undefined ? "GET" : "POST");
        return (await backend.expect(method, "/fn/" + path.replace(/^\/+/, ""), body)) as R;
      },
    },
  };
}
