/**
 * Latency compensation and the offline queue. Every write made through the
 * SDK is kept here from the moment it is made: listeners show it at once
 * (`hasPendingWrites`), it is sent to the server one write at a time in the
 * order the app made them, and while the server cannot be reached it waits
 * and is retried (with backoff, and at once when the realtime connection is
 * back). A write the server acknowledged keeps showing until a listener has
 * the server's version of the document (so the change arriving later is no
 * second event); a refused one is dropped, listeners show the server's state
 * again, and its promise rejects with the server's error.
 */

import { NimbusError } from "./errors.js";
import { sameValue } from "./matching.js";
import { Timestamp } from "./values.js";

type Data = Record<string, unknown>;

/** One document write, as the app made it (field transforms unresolved). */
export type Mutation =
  | { op: "set" | "create" | "merge" | "update"; path: string; data: Data }
  | { op: "delete"; path: string };

/** What the server answered for each path: the document's new version, or `null` once deleted. */
export type Outcome = Map<string, number | null>;

interface Write {
  mutations: Mutation[];
  send: () => Promise<Outcome>;
  resolve(): void;
  reject(error: unknown): void;
  /** Set once the server acknowledged the write. */
  outcome?: Outcome;
  acknowledgedAt?: number;
  /** The order of acknowledgements: a listener opened after it has the write in the server's state. */
  ackSeq?: number;
}

/** A document as this client's writes make it: `data` is `null` when deleted, `undefined` when unknown. */
export interface Overlay {
  data: Data | null | undefined;
}

/** How long an acknowledged write may stand in for a server change that never reaches a listener. */
const RECONCILE_GRACE_MS = 10_000;
const MAX_RETRY_MS = 5_000;

const unreachable = (e: unknown) => e instanceof NimbusError && e.code === "unavailable" && e.status === 0;

export class LocalWrites {
  /** Every write not yet reconciled, in the order made. */
  private writes: Write[] = [];
  private queue: Write[] = [];
  private sending = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retryMs = 250;
  private cleanupTimer: ReturnType<typeof setTimeout> | null = null;
  private views = new Set<() => void>();
  private refreshQueued = false;
  private acks = 0;

  /** `connected` says whether server changes can currently reach listeners. */
  constructor(readonly connected: () => boolean) {}

  /** Shows `mutations` to listeners at once, then sends them (after every earlier write); resolves once acknowledged. */
  submit(mutations: Mutation[], send: () => Promise<Outcome>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const write: Write = { mutations, send, resolve, reject };
      this.writes.push(write);
      this.queue.push(write);
      this.changed();
      void this.pump();
    });
  }

  /** Calls `refresh` (soon, once per burst) whenever what the writes show changes; returns a stop. */
  watch(refresh: () => void): () => void {
    this.views.add(refresh);
    return () => void this.views.delete(refresh);
  }

  /** Sends what waits now, without waiting for the next retry (the connection is back). */
  wake(): void {
    if (!this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    void this.pump();
  }

  /** A mark for a listener opening now: writes acknowledged before it are in its first server snapshot. */
  mark(): number {
    return this.acks;
  }

  /** Paths some write still stands in for. */
  paths(): Set<string> {
    return new Set(this.writes.flatMap((w) => w.mutations.map((m) => m.path)));
  }

  /**
   * The document at `path` with this client's writes applied over `base` (the
   * server's data as the listener has it, `undefined` when it has none, at
   * `serverVersion`; the listener opened at `mark`), or `undefined` when no
   * write stands in for it there.
   */
  overlay(path: string, base: Data | null | undefined, serverVersion: number, mark: number): Overlay | undefined {
    let data = base;
    let applied = false;
    for (const write of this.writes) {
      if (write.ackSeq !== undefined && write.ackSeq <= mark) continue;
      for (const mutation of write.mutations) {
        if (mutation.path !== path || !stillShown(write, path, serverVersion)) continue;
        data = applyMutation(data, mutation);
        applied = true;
      }
    }
    return applied ? { data } : undefined;
  }

  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.queue.length > 0) {
        const write = this.queue[0] as Write;
        try {
          write.outcome = await write.send();
        } catch (error) {
          if (unreachable(error)) {
            this.retryLater();
            return;
          }
          this.queue.shift();
          this.writes = this.writes.filter((w) => w !== write);
          this.changed();
          write.reject(error);
          continue;
        }
        this.queue.shift();
        this.retryMs = 250;
        write.acknowledgedAt = Date.now();
        write.ackSeq = ++this.acks;
        this.scheduleCleanup();
        this.changed();
        write.resolve();
      }
    } finally {
      this.sending = false;
    }
  }

  private retryLater(): void {
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.pump();
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  /** Drops acknowledged writes once their grace has passed (while changes can reach listeners). */
  private scheduleCleanup(): void {
    if (this.cleanupTimer) return;
    this.cleanupTimer = setTimeout(() => {
      this.cleanupTimer = null;
      const now = Date.now();
      const expired = (w: Write) => w.acknowledgedAt !== undefined && now - w.acknowledgedAt >= RECONCILE_GRACE_MS;
      if (this.connected() && this.writes.some(expired)) {
        this.writes = this.writes.filter((w) => !expired(w));
        this.changed();
      }
      if (this.writes.some((w) => w.acknowledgedAt !== undefined)) this.scheduleCleanup();
    }, RECONCILE_GRACE_MS / 4);
    // A housekeeping timer must not keep a Node process alive.
    (this.cleanupTimer as { unref?: () => void }).unref?.();
  }

  private changed(): void {
    if (this.refreshQueued) return;
    this.refreshQueued = true;
    queueMicrotask(() => {
      this.refreshQueued = false;
      for (const refresh of [...this.views]) refresh();
    });
  }
}

/** A write shows until acknowledged, then until the listener has the server's version of its result. */
function stillShown(write: Write, path: string, serverVersion: number): boolean {
  if (!write.outcome) return true;
  const version = write.outcome.get(path);
  if (version === undefined) return false;
  return version === null ? serverVersion > 0 : serverVersion < version;
}

/** The document after `mutation`, the way the server would make it (server times estimated by the clock). */
export function applyMutation(current: Data | null | undefined, mutation: Mutation): Data | null | undefined {
  switch (mutation.op) {
    case "delete":
      return null;
    case "set":
    case "create":
      return replaceWith(mutation.data, current ?? undefined);
    case "update":
      return current ? mergeInto(current, mutation.data) : current;
    case "merge":
      return current === undefined ? undefined : mergeInto(current ?? {}, mutation.data);
  }
}

const DELETE = Symbol("delete");

const isPlainObject = (v: unknown): v is Data =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Timestamp);

function asData(value: unknown): Data | undefined {
  return isPlainObject(value) ? value : undefined;
}

/** A field transform or typed value (`{"$increment": 1}`, …) resolved against the field's current value. */
function transform(value: Data, current: unknown): unknown {
  const keys = Object.keys(value);
  const key = keys.length === 1 ? keys[0] : undefined;
  const operand = key === undefined ? undefined : value[key];
  switch (key) {
    case "$serverTimestamp":
      return Timestamp.now();
    case "$timestamp":
      return new Timestamp(String(operand));
    case "$increment":
      return (typeof current === "number" ? current : 0) + Number(operand);
    case "$arrayUnion": {
      const result = Array.isArray(current) ? [...current] : [];
      for (const v of Array.isArray(operand) ? operand : []) if (!result.some((e) => sameValue(e, v))) result.push(v);
      return result;
    }
    case "$arrayRemove": {
      const removed = Array.isArray(operand) ? operand : [];
      return Array.isArray(current) ? current.filter((e) => !removed.some((v) => sameValue(e, v))) : [];
    }
    case "$delete":
      return DELETE;
    default:
      return undefined;
  }
}

const isTransform = (v: Data) => Object.keys(v).length === 1 && Object.keys(v)[0]?.startsWith("$") === true;

/** A value as written, with its transforms resolved against `current`. */
function resolved(value: unknown, current: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => resolved(v, undefined));
  if (!isPlainObject(value)) return value;
  if (isTransform(value)) return transform(value, current);
  return replaceWith(value, asData(current));
}

/** `data` as a whole new value (PUT), transforms resolved against `current`. */
function replaceWith(data: Data, current: Data | undefined): Data {
  const result: Data = {};
  for (const [key, value] of Object.entries(data)) {
    const next = resolved(value, current?.[key]);
    if (next !== DELETE) result[key] = next;
  }
  return result;
}

/** `data` merged into `current` (PATCH): nested objects field by field, anything else replaces. */
function mergeInto(current: Data, data: Data): Data {
  const result: Data = { ...current };
  for (const [key, value] of Object.entries(data)) {
    const existing = asData(current[key]);
    const next = isPlainObject(value) && !isTransform(value) && existing ? mergeInto(existing, value) : resolved(value, current[key]);
    if (next === DELETE) delete result[key];
    else result[key] = next;
  }
  return result;
}
