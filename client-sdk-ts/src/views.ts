/**
 * What a listener sees: the server's state of a document or query (kept
 * frame by frame from the realtime connection) with this client's own
 * writes laid over it (`LocalWrites`). Each view renders the whole result
 * again on every change and tells its listener only what differs from what
 * it showed last: documents added, modified (data changed or moved) and
 * removed, with indices that replay the change in order. A change of
 * metadata alone (a pending write confirmed with the same data) is told only
 * to listeners that ask for `includeMetadataChanges`.
 */

import type { LocalWrites } from "./local.js";
import { type Clause, type Order, type Scope, comparator, inScope, matches } from "./matching.js";
import type { Frame, WireDocument } from "./realtime.js";
import { Timestamp, fromWire } from "./values.js";

export type DocumentData = Record<string, unknown>;

export interface SnapshotMetadata {
  /** This client wrote the document (or, for a query, one of them) and the server's change has not arrived yet. */
  hasPendingWrites: boolean;
  /** The realtime connection was down when this was shown: the server's part may be out of date. */
  fromCache: boolean;
}

export interface DocumentSnapshot<T = DocumentData> {
  id: string;
  path: string;
  exists: boolean;
  data: T | null;
  version: number;
  createTime: Timestamp | null;
  updateTime: Timestamp | null;
  metadata: SnapshotMetadata;
}

export type ChangeType = "added" | "modified" | "removed";

export interface DocumentChange<T = DocumentData> {
  type: ChangeType;
  doc: DocumentSnapshot<T>;
  oldIndex: number;
  newIndex: number;
}

export interface QuerySnapshot<T = DocumentData> {
  docs: DocumentSnapshot<T>[];
  changes: DocumentChange<T>[];
  metadata: SnapshotMetadata;
}

export interface ListenOptions {
  /** Also call the listener when only metadata changed (e.g. a pending write was confirmed). */
  includeMetadataChanges?: boolean;
}

const SERVER: SnapshotMetadata = { hasPendingWrites: false, fromCache: false };

export function snapshotOf<T>(wire: WireDocument): DocumentSnapshot<T> {
  const time = (text?: string) => (text ? new Timestamp(text) : null);
  return {
    id: wire.id,
    path: wire.path,
    exists: wire.data !== undefined,
    data: wire.data === undefined ? null : (fromWire(wire.data) as T),
    version: wire.version ?? 0,
    createTime: time(wire.createTime),
    updateTime: time(wire.updateTime),
    metadata: SERVER,
  };
}

export function missing<T>(path: string, metadata = SERVER): DocumentSnapshot<T> {
  const id = path.split("/").pop() ?? path;
  return { id, path, exists: false, data: null, version: 0, createTime: null, updateTime: null, metadata };
}

/** Deep equality of document values (maps regardless of key order, timestamps by instant). */
export function sameData(a: unknown, b: unknown): boolean {
  if (a instanceof Timestamp || b instanceof Timestamp) {
    return a instanceof Timestamp && b instanceof Timestamp && a.isEqual(b);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((v, i) => sameData(v, b[i]));
  }
  if (a !== null && b !== null && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    const bv = b as DocumentData;
    return ka.length === kb.length && ka.every((k) => k in bv && sameData((a as DocumentData)[k], bv[k]));
  }
  return a === b;
}

const sameDocument = (a: DocumentSnapshot<unknown>, b: DocumentSnapshot<unknown>) =>
  a.exists === b.exists && sameData(a.data, b.data);

/** The server's document with this client's writes over it, or the server's alone. */
function withWrites<T>(
  writes: LocalWrites,
  mark: number,
  path: string,
  server: DocumentSnapshot<T> | undefined,
): DocumentSnapshot<T> | undefined {
  const base = server === undefined ? undefined : ((server.data ?? null) as DocumentData | null);
  const overlay = writes.overlay(path, base, server?.version ?? 0, mark);
  if (!overlay) return server;
  if (overlay.data === undefined) return undefined;
  const metadata = { hasPendingWrites: true, fromCache: !writes.connected() };
  if (overlay.data === null) return missing<T>(path, metadata);
  const shape = server ?? missing<T>(path);
  return { ...shape, exists: true, data: overlay.data as T, metadata };
}

/**
 * One document's listener. It shows nothing before the server's first
 * snapshot; from then on, that state with this client's writes over it.
 */
export class DocumentView<T> {
  private server: DocumentSnapshot<T> | undefined;
  private shown: DocumentSnapshot<T> | undefined;
  private readonly mark: number;

  constructor(
    private readonly path: string,
    private readonly writes: LocalWrites,
    private readonly next: (snapshot: DocumentSnapshot<T>) => void,
    private readonly options: ListenOptions,
  ) {
    this.mark = writes.mark();
  }

  fromServer(frame: Frame): void {
    if (frame.type === "snapshot") {
      const first = frame.documents?.[0];
      this.server = first ? snapshotOf<T>(first) : missing<T>(this.path);
    } else if (frame.type === "change") {
      for (const change of frame.changes ?? []) {
        this.server = change.type === "removed" ? missing<T>(this.path) : snapshotOf<T>(change.document);
      }
    } else {
      return;
    }
    this.render();
  }

  render(): void {
    if (this.server === undefined) return;
    const snapshot = withWrites(this.writes, this.mark, this.path, this.server);
    if (!snapshot) return;
    const before = this.shown;
    this.shown = snapshot;
    const metadataChanged =
      before?.metadata.hasPendingWrites !== snapshot.metadata.hasPendingWrites ||
      before?.metadata.fromCache !== snapshot.metadata.fromCache;
    if (!before || !sameDocument(before, snapshot) || (this.options.includeMetadataChanges && metadataChanged)) {
      this.next(snapshot);
    }
  }
}

export interface LiveQuery {
  scope: Scope;
  where: Clause[];
  orderBy: Order[];
  limit?: number;
}

/** One query's listener: the documents in the query's order, shown from the server's first snapshot on. */
export class QueryView<T> {
  private server = new Map<string, DocumentSnapshot<T>>();
  private synced = false;
  private readonly mark: number;
  private shown: DocumentSnapshot<T>[] | undefined;
  private shownMetadata: SnapshotMetadata | undefined;
  private readonly order: (a: DocumentSnapshot<T>, b: DocumentSnapshot<T>) => number;

  constructor(
    private readonly query: LiveQuery,
    private readonly writes: LocalWrites,
    private readonly next: (snapshot: QuerySnapshot<T>) => void,
    private readonly options: ListenOptions,
  ) {
    this.order = comparator(query.orderBy);
    this.mark = writes.mark();
  }

  fromServer(frame: Frame): void {
    if (frame.type === "snapshot") {
      this.server = new Map((frame.documents ?? []).map((d) => [d.path, snapshotOf<T>(d)]));
      this.synced = true;
    } else if (frame.type === "change") {
      for (const change of frame.changes ?? []) {
        if (change.type === "removed") this.server.delete(change.document.path);
        else this.server.set(change.document.path, snapshotOf<T>(change.document));
      }
    } else {
      return;
    }
    this.render();
  }

  render(): void {
    if (!this.synced) return;
    const docs = this.documents();
    const metadata = { hasPendingWrites: docs.some((d) => d.metadata.hasPendingWrites), fromCache: !this.writes.connected() };
    const before = this.shown;
    const changes = diff(before ?? [], docs);
    const metadataChanged =
      this.shownMetadata?.hasPendingWrites !== metadata.hasPendingWrites ||
      this.shownMetadata?.fromCache !== metadata.fromCache;
    const metadataToTell = this.options.includeMetadataChanges === true && metadataChanged;
    const tell = before === undefined || changes.length > 0 || metadataToTell;
    this.shown = docs;
    this.shownMetadata = metadata;
    if (tell) this.next({ docs: [...docs], changes, metadata });
  }

  /** The server's documents with this client's writes over them, filtered, ordered and limited. */
  private documents(): DocumentSnapshot<T>[] {
    const candidates = new Map(this.server);
    for (const path of this.writes.paths()) {
      if (!inScope(this.query.scope, path)) continue;
      const doc = withWrites(this.writes, this.mark, path, this.server.get(path));
      if (doc?.exists && matches(this.query.where, this.query.orderBy, doc)) candidates.set(path, doc);
      else candidates.delete(path);
    }
    const docs = [...candidates.values()].sort(this.order);
    return this.query.limit === undefined ? docs : docs.slice(0, this.query.limit);
  }
}

/**
 * The changes that turn `before` into `after`, each index valid once the
 * changes before it are applied: removals first, then, position by
 * position, additions and moved or modified documents.
 */
export function diff<T>(before: DocumentSnapshot<T>[], after: DocumentSnapshot<T>[]): DocumentChange<T>[] {
  const remaining = new Set(after.map((d) => d.path));
  const working = [...before];
  const changes: DocumentChange<T>[] = [];
  for (const doc of before) {
    if (remaining.has(doc.path)) continue;
    const oldIndex = working.indexOf(doc);
    working.splice(oldIndex, 1);
    changes.push({ type: "removed", doc, oldIndex, newIndex: -1 });
  }
  after.forEach((doc, newIndex) => {
    const oldIndex = working.findIndex((d) => d.path === doc.path);
    if (oldIndex < 0) {
      working.splice(newIndex, 0, doc);
      changes.push({ type: "added", doc, oldIndex: -1, newIndex });
      return;
    }
    const previous = working[oldIndex] as DocumentSnapshot<T>;
    working.splice(oldIndex, 1);
    working.splice(newIndex, 0, doc);
    if (oldIndex !== newIndex || !sameDocument(previous, doc)) {
      changes.push({ type: "modified", doc, oldIndex, newIndex });
    }
  });
  return changes;
}
