/**
 * Documents: references to documents and collections, a query builder, reads,
 * writes, counts, and live snapshots (`onSnapshot`). Writes go through
 * `LocalWrites`, so this client's listeners show them at once and they are
 * sent in order (queued while the server cannot be reached); listeners are
 * views (`views.ts`) over the server's realtime frames and those writes.
 * Values come back with timestamps as `Timestamp`.
 */

import { NimbusError } from "./errors.js";
import type { LocalWrites, Mutation, Outcome } from "./local.js";
import type { Clause, Operator, Order, Scope } from "./matching.js";
import type { Realtime, Target, WireDocument } from "./realtime.js";
import {
  type DocumentData,
  type DocumentSnapshot,
  DocumentView,
  type ListenOptions,
  type QuerySnapshot,
  QueryView,
  missing,
  snapshotOf,
} from "./views.js";

export type { Clause, Operator } from "./matching.js";
export type { DocumentChange, DocumentData, DocumentSnapshot, ListenOptions, QuerySnapshot, SnapshotMetadata } from "./views.js";

/** What documents need from the client: authenticated requests, the realtime connection, the write queue. */
export interface Backend {
  request(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: unknown }>;
  expect(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<unknown>;
  realtime: Realtime;
  writes: LocalWrites;
}

/** A filter clause, for `or(...)` / `and(...)`. */
export const where = (field: string, op: Operator, value: unknown): Clause => [field, op, value];
export const or = (...clauses: Clause[]): Clause => ({ or: clauses });
export const and = (...clauses: Clause[]): Clause => ({ and: clauses });

const docsPath = (path: string) => "/v1/docs/" + path.split("/").map(encodeURIComponent).join("/");

function randomId(): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/** The outcome of a one-document write, from the document the server answered with. */
const written = (path: string, body: unknown): Outcome => new Map([[path, (body as WireDocument).version ?? 0]]);

export class DocumentReference<T = DocumentData> {
  readonly id: string;

  constructor(
    private readonly backend: Backend,
    readonly path: string,
  ) {
    this.id = path.split("/").pop() ?? path;
  }

  async get(): Promise<DocumentSnapshot<T>> {
    const answer = await this.backend.request("GET", docsPath(this.path));
    if (answer.status === 404) return missing(this.path);
    if (answer.status !== 200) await this.backend.expect("GET", docsPath(this.path));
    return snapshotOf<T>(answer.body as WireDocument);
  }

  /** Creates or replaces; with `{merge: true}` merges into the document (creating it when missing). */
  set(data: Partial<T> | T, options: { merge?: boolean } = {}): Promise<void> {
    const path = docsPath(this.path);
    const body = data as DocumentData;
    if (!options.merge) {
      return this.write({ op: "set", path: this.path, data: body }, async () =>
        written(this.path, await this.backend.expect("PUT", path, body)),
      );
    }
    return this.write({ op: "merge", path: this.path, data: body }, async () => {
      const answer = await this.backend.request("PATCH", path, body);
      if (answer.status === 404) return written(this.path, await this.backend.expect("PUT", path, body));
      if (answer.status >= 300) await this.backend.expect("PATCH", path, body);
      return written(this.path, answer.body);
    });
  }

  /** Creates the document; `already-exists` when it exists. */
  create(data: T): Promise<void> {
    const body = data as DocumentData;
    return this.write({ op: "create", path: this.path, data: body }, async () =>
      written(this.path, await this.backend.expect("PUT", docsPath(this.path), body, { "if-none-match": "*" })),
    );
  }

  /** Merges into an existing document (`not-found` when it is missing). */
  update(data: Partial<T> | DocumentData): Promise<void> {
    const body = data as DocumentData;
    return this.write({ op: "update", path: this.path, data: body }, async () =>
      written(this.path, await this.backend.expect("PATCH", docsPath(this.path), body)),
    );
  }

  delete(): Promise<void> {
    return this.write({ op: "delete", path: this.path }, async () => {
      await this.backend.expect("DELETE", docsPath(this.path));
      return new Map([[this.path, null]]);
    });
  }

  private write(mutation: Mutation, send: () => Promise<Outcome>): Promise<void> {
    return this.backend.writes.submit([mutation], send);
  }

  /**
   * Calls `next` with the document now and after every change (this client's
   * writes at once, with `metadata.hasPendingWrites`); returns an unsubscribe.
   */
  onSnapshot(
    next: (snapshot: DocumentSnapshot<T>) => void,
    onError?: (error: NimbusError) => void,
    options: ListenOptions = {},
  ): () => void {
    const view = new DocumentView<T>(this.path, this.backend.writes, next, options);
    return listen(this.backend, { doc: this.path }, true, view, onError);
  }
}

/** Subscribes `view` to `target` and to this client's writes; the returned stop ends both. */
function listen(
  backend: Backend,
  target: Target,
  resumable: boolean,
  view: { fromServer(frame: import("./realtime.js").Frame): void; render(): void },
  onError?: (error: NimbusError) => void,
): () => void {
  const unwatch = backend.writes.watch(() => view.render());
  const unsubscribe = backend.realtime.subscribe({
    target,
    resumable,
    onFrame: (frame) => view.fromServer(frame),
    onError: (error) => {
      unwatch();
      onError?.(error);
    },
  });
  view.render();
  return () => {
    unwatch();
    unsubscribe();
  };
}


interface QueryShape {
  scope: Scope;
  where: Clause[];
  orderBy: Order[];
  limit?: number;
  startAfter?: string;
}

export class Query<T = DocumentData> {
  constructor(
    protected readonly backend: Backend,
    protected readonly shape: QueryShape,
  ) {}

  private with(change: Partial<QueryShape>): Query<T> {
    return new Query<T>(this.backend, { ...this.shape, ...change });
  }

  where(field: string, op: Operator, value: unknown): Query<T>;
  where(clause: Clause): Query<T>;
  where(field: string | Clause, op?: Operator, value?: unknown): Query<T> {
    const clause: Clause = typeof field === "string" ? [field, op as Operator, value] : field;
    return this.with({ where: [...this.shape.where, clause] });
  }

  orderBy(field: string, direction: "asc" | "desc" = "asc"): Query<T> {
    return this.with({ orderBy: [...this.shape.orderBy, [field, direction]] });
  }

  limit(n: number): Query<T> {
    return this.with({ limit: n });
  }

  /** Continues after a page: the `nextCursor` of the previous `get()`. */
  startAfter(cursor: string): Query<T> {
    return this.with({ startAfter: cursor });
  }

  private body(extra: Record<string, unknown> = {}): Record<string, unknown> {
    const { scope, where, orderBy, limit, startAfter } = this.shape;
    return {
      ...scope,
      ...(where.length ? { where } : {}),
      ...(orderBy.length ? { orderBy } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(startAfter !== undefined ? { startAfter } : {}),
      ...extra,
    };
  }

  async get(): Promise<{ docs: DocumentSnapshot<T>[]; nextCursor: string | null }> {
    const page = (await this.backend.expect("POST", "/v1/query", this.body())) as {
      documents: WireDocument[];
      nextCursor: string | null;
    };
    return { docs: page.documents.map((d) => snapshotOf<T>(d)), nextCursor: page.nextCursor };
  }

  async count(): Promise<number> {
    const answer = (await this.backend.expect("POST", "/v1/query", this.body({ count: true }))) as { count: number };
    return answer.count;
  }

  /** Aggregates by name: `{total: ["sum", "price"], n: ["count"]}`. */
  async aggregate(aggregates: Record<string, [string, string?]>): Promise<Record<string, number | null>> {
    const answer = (await this.backend.expect("POST", "/v1/query", this.body({ aggregate: aggregates }))) as {
      aggregates: Record<string, number | null>;
    };
    return answer.aggregates;
  }

  /**
   * Calls `next` with the matching documents now and after every change (this
   * client's writes at once, with `metadata.hasPendingWrites`); returns an unsubscribe.
   */
  onSnapshot(
    next: (snapshot: QuerySnapshot<T>) => void,
    onError?: (error: NimbusError) => void,
    options: ListenOptions = {},
  ): () => void {
    const { startAfter: _cursor, ...live } = this.shape;
    const query = new Query<T>(this.backend, live).body();
    const view = new QueryView<T>(live, this.backend.writes, next, options);
    return listen(this.backend, { query }, this.shape.limit === undefined, view, onError);
  }
}

export class CollectionReference<T = DocumentData> extends Query<T> {
  constructor(
    backend: Backend,
    readonly path: string,
  ) {
    super(backend, { scope: { collection: path }, where: [], orderBy: [] });
  }

  /** A document of this collection: `id`, or a new random one. */
  doc(id?: string): DocumentReference<T> {
    return new DocumentReference<T>(this.backend, `${this.path}/${id ?? randomId()}`);
  }

  /** Creates a document with a new random id (shown to this client's listeners at once). */
  async add(data: T): Promise<DocumentReference<T>> {
    const ref = this.doc();
    await ref.create(data);
    return ref;
  }
}

export function collectionGroup<T>(backend: Backend, id: string): Query<T> {
  return new Query<T>(backend, { scope: { collectionGroup: id }, where: [], orderBy: [] });
}

/** Writes committed together, or not at all (`POST /v1/batch`, at most 500). */
export class WriteBatch {
  private writes: Record<string, unknown>[] = [];

  constructor(private readonly backend: Backend) {}

  /** Creates or replaces the document. */
  set<T>(ref: DocumentReference<T>, data: T | Partial<T>): WriteBatch {
    this.writes.push({ op: "set", path: ref.path, data });
    return this;
  }

  /** Creates the document; the batch fails with `already-exists` when it exists. */
  create<T>(ref: DocumentReference<T>, data: T): WriteBatch {
    this.writes.push({ op: "create", path: ref.path, data });
    return this;
  }

  /** Merges into the existing document; the batch fails with `not-found` when it is missing. */
  update<T>(ref: DocumentReference<T>, data: Partial<T> | DocumentData): WriteBatch {
    this.writes.push({ op: "update", path: ref.path, data });
    return this;
  }

  delete<T>(ref: DocumentReference<T>): WriteBatch {
    this.writes.push({ op: "delete", path: ref.path });
    return this;
  }

  /** Sends the writes (after every earlier write of this client); listeners show them at once. */
  commit(): Promise<void> {
    const writes = this.writes;
    const mutations = writes.map(mutationOf);
    return this.backend.writes.submit(mutations, async () => {
      const answer = (await this.backend.expect("POST", "/v1/batch", { writes })) as {
        writes: { path: string; version?: number; deleted?: boolean }[];
      };
      return new Map(answer.writes.map((w) => [w.path, w.deleted ? null : (w.version ?? 0)]));
    });
  }
}

function mutationOf(write: Record<string, unknown>): Mutation {
  const path = String(write.path);
  const op = write.op as Mutation["op"];
  return op === "delete" ? { op, path } : { op, path, data: write.data as DocumentData };
}
