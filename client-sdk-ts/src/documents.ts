/**
 * Documents: references to documents and collections, a query builder, reads,
 * writes, counts, and live snapshots (`onSnapshot`) kept from the server's
 * realtime frames. Values come back with timestamps as `Timestamp`.
 */

import { NimbusError } from "./errors.js";
import type { Frame, Realtime, Target, WireDocument } from "./realtime.js";
import { Timestamp, fromWire } from "./values.js";

/** What documents need from the client: authenticated requests and the realtime connection. */
export interface Backend {
  request(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  expect(method: string, path: string, body?: unknown): Promise<unknown>;
  realtime: Realtime;
}

export type DocumentData = Record<string, unknown>;

export interface DocumentSnapshot<T = DocumentData> {
  id: string;
  path: string;
  exists: boolean;
  data: T | null;
  version: number;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
}

export type ChangeType = "added" | "modified" | "removed";

export interface QuerySnapshot<T = DocumentData> {
  docs: DocumentSnapshot<T>[];
  changes: { type: ChangeType; doc: DocumentSnapshot<T>; oldIndex: number; newIndex: number }[];
  metadata: { hasPendingWrites: boolean; fromCache: boolean };
}

export type Operator = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not-in" | "array-contains" | "array-contains-any";
export type Clause = [string, Operator, unknown] | { or: Clause[] } | { and: Clause[] };

/** A filter clause, for `or(...)` / `and(...)`. */
export const where = (field: string, op: Operator, value: unknown): Clause => [field, op, value];
export const or = (...clauses: Clause[]): Clause => ({ or: clauses });
export const and = (...clauses: Clause[]): Clause => ({ and: clauses });

function snapshotOf<T>(wire: WireDocument): DocumentSnapshot<T> {
  const time = (text?: string) => (text ? new Timestamp(text) : null);
  return {
    id: wire.id,
    path: wire.path,
    exists: wire.data !== undefined,
    data: wire.data === undefined ? null : (fromWire(wire.data) as T),
    version: wire.version ?? 0,
    createTime: time(wire.createTime),
    updateTime: time(wire.updateTime),
  };
}

function missing<T>(path: string): DocumentSnapshot<T> {
  return { id: path.split("/").pop() ?? path, path, exists: false, data: null, version: 0, createTime: null, updateTime: null };
}

const docsPath = (path: string) => "/v1/docs/" + path.split("/").map(encodeURIComponent).join("/");

function randomId(): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

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
  async set(data: Partial<T> | T, options: { merge?: boolean } = {}): Promise<void> {
    if (options.merge) {
      const answer = await this.backend.request("PATCH", docsPath(this.path), data);
      if (answer.status !== 404) {
        if (answer.status >= 300) await this.backend.expect("PATCH", docsPath(this.path), data);
        return;
      }
    }
    await this.backend.expect("PUT", docsPath(this.path), data);
  }

  /** Merges into an existing document (`not-found` when it is missing). */
  async update(data: Partial<T> | DocumentData): Promise<void> {
    await this.backend.expect("PATCH", docsPath(this.path), data);
  }

  async delete(): Promise<void> {
    await this.backend.expect("DELETE", docsPath(this.path));
  }

  /** Calls `next` with the document now and after every change; returns an unsubscribe. */
  onSnapshot(next: (snapshot: DocumentSnapshot<T>) => void, onError?: (error: NimbusError) => void): () => void {
    return this.backend.realtime.subscribe({
      target: { doc: this.path },
      resumable: true,
      onFrame: (frame) => {
        if (frame.type === "snapshot") {
          const first = frame.documents?.[0];
          next(first ? snapshotOf<T>(first) : missing<T>(this.path));
        } else if (frame.type === "change") {
          for (const change of frame.changes ?? []) {
            next(change.type === "removed" ? missing<T>(this.path) : snapshotOf<T>(change.document));
          }
        }
      },
      onError: (error) => onError?.(error),
    });
  }
}

type Order = [string, "asc" | "desc"];

interface QueryShape {
  scope: { collection: string } | { collectionGroup: string };
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

  /** Calls `next` with the matching documents now and after every change; returns an unsubscribe. */
  onSnapshot(next: (snapshot: QuerySnapshot<T>) => void, onError?: (error: NimbusError) => void): () => void {
    const { startAfter: _cursor, ...live } = this.shape;
    const query = new Query<T>(this.backend, live).body();
    const view = new LiveView<T>(this.shape.orderBy);
    const target: Target = { query };
    return this.backend.realtime.subscribe({
      target,
      resumable: this.shape.limit === undefined,
      onFrame: (frame) => {
        const snapshot = view.apply(frame);
        if (snapshot) next(snapshot);
      },
      onError: (error) => onError?.(error),
    });
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

  /** Creates a document with a server-made id. */
  async add(data: T): Promise<DocumentReference<T>> {
    const created = (await this.backend.expect("POST", docsPath(this.path), data)) as WireDocument;
    return new DocumentReference<T>(this.backend, created.path);
  }
}

export function collectionGroup<T>(backend: Backend, id: string): Query<T> {
  return new Query<T>(backend, { scope: { collectionGroup: id }, where: [], orderBy: [] });
}

/** Firestore's type order for the values a query orders by. */
function rank(value: unknown): number {
  if (value === null || value === undefined) return 0;
  if (typeof value === "boolean") return 1;
  if (typeof value === "number") return 2;
  if (value instanceof Timestamp) return 3;
  if (typeof value === "string") return 4;
  if (Array.isArray(value)) return 5;
  return 6;
}

function compareValues(a: unknown, b: unknown): number {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  const ta = a instanceof Timestamp ? a.iso : typeof a === "string" ? a : "";
  const tb = b instanceof Timestamp ? b.iso : typeof b === "string" ? b : "";
  return ta < tb ? -1 : ta > tb ? 1 : 0;
}

function field(data: unknown, path: string): unknown {
  return path.split(".").reduce<unknown>((v, k) => (v && typeof v === "object" ? (v as DocumentData)[k] : undefined), data);
}

/** A live query's documents, in the query's order, updated frame by frame. */
class LiveView<T> {
  private docs: DocumentSnapshot<T>[] = [];

  constructor(private readonly order: Order[]) {}

  private compare = (a: DocumentSnapshot<T>, b: DocumentSnapshot<T>): number => {
    for (const [name, direction] of this.order) {
      const c = compareValues(field(a.data, name), field(b.data, name));
      if (c !== 0) return direction === "desc" ? -c : c;
    }
    const tail = a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
    return this.order.at(-1)?.[1] === "desc" ? -tail : tail;
  };

  apply(frame: Frame): QuerySnapshot<T> | null {
    const metadata = { hasPendingWrites: false, fromCache: false };
    if (frame.type === "snapshot") {
      const before = this.docs;
      this.docs = (frame.documents ?? []).map((d) => snapshotOf<T>(d));
      const changes = [
        ...before.map((doc, oldIndex) => ({ type: "removed" as const, doc, oldIndex, newIndex: -1 })),
        ...this.docs.map((doc, newIndex) => ({ type: "added" as const, doc, oldIndex: -1, newIndex })),
      ];
      return { docs: [...this.docs], changes: before.length ? changes : changes.filter((c) => c.type === "added"), metadata };
    }
    if (frame.type !== "change") return null;
    const changes: QuerySnapshot<T>["changes"] = [];
    for (const change of frame.changes ?? []) {
      const oldIndex = this.docs.findIndex((d) => d.path === change.document.path);
      const old = oldIndex >= 0 ? this.docs[oldIndex] : undefined;
      if (oldIndex >= 0) this.docs.splice(oldIndex, 1);
      if (change.type === "removed") {
        if (old) changes.push({ type: "removed", doc: old, oldIndex, newIndex: -1 });
        continue;
      }
      const doc = snapshotOf<T>(change.document);
      let newIndex = this.docs.findIndex((d) => this.compare(doc, d) < 0);
      if (newIndex < 0) newIndex = this.docs.length;
      this.docs.splice(newIndex, 0, doc);
      changes.push({ type: old ? "modified" : "added", doc, oldIndex, newIndex });
    }
    return { docs: [...this.docs], changes, metadata };
  }
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

  async commit(): Promise<void> {
    await this.backend.expect("POST", "/v1/batch", { writes: this.writes });
  }
}
