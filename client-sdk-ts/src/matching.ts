/**
 * The server's query semantics, evaluated on one document in this client:
 * whether a document is in a query's scope and passes its filter, and how two
 * documents compare in its order. Live queries use it to place this client's
 * own pending writes before the server has seen them; it mirrors the
 * server's `store/matching.rs` (Firestore's type order, comparisons only
 * between values of the same type).
 */

import { Timestamp } from "./values.js";

export type Operator = "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not-in" | "array-contains" | "array-contains-any";
export type Clause = [string, Operator, unknown] | { or: Clause[] } | { and: Clause[] };
export type Order = [string, "asc" | "desc"];
export type Scope = { collection: string } | { collectionGroup: string };

/** What a document is, for matching: its path and its data (SDK values). */
export interface Matchable {
  path: string;
  data: unknown;
}

/** Firestore's type order. */
function rank(value: unknown): number {
  if (value === null || value === undefined) return 0;
  if (typeof value === "boolean") return 1;
  if (typeof value === "number") return 2;
  if (value instanceof Timestamp) return 3;
  if (typeof value === "string") return 4;
  if (Array.isArray(value)) return 5;
  return 6;
}

/** Orders two values of any types (type order first, then value). */
export function compareValues(a: unknown, b: unknown): number {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  if (a instanceof Timestamp && b instanceof Timestamp) return a.toMillis() - b.toMillis() || textOrder(a.iso, b.iso);
  if (typeof a === "string" && typeof b === "string") return textOrder(a, b);
  return textOrder(JSON.stringify(a), JSON.stringify(b));
}

const textOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function sameValue(a: unknown, b: unknown): boolean {
  return rank(a) === rank(b) && compareValues(a, b) === 0;
}

/** The value at a dotted field path, `undefined` when absent. */
export function field(data: unknown, path: string): unknown {
  return path
    .split(".")
    .reduce<unknown>((v, k) => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>)[k] : undefined), data);
}

/** The collection a document path belongs to. */
export const parentOf = (path: string) => path.slice(0, Math.max(path.lastIndexOf("/"), 0));

export function inScope(scope: Scope, path: string): boolean {
  const collection = parentOf(path);
  if ("collection" in scope) return collection === scope.collection;
  return collection === scope.collectionGroup || collection.endsWith("/" + scope.collectionGroup);
}

function compare(value: unknown, op: Operator, operand: unknown): boolean {
  switch (op) {
    case "==":
      return sameValue(value, operand);
    case "!=":
      return !sameValue(value, operand);
    case "in":
      return Array.isArray(operand) && operand.some((o) => sameValue(value, o));
    case "not-in":
      return Array.isArray(operand) && operand.every((o) => !sameValue(value, o));
    case "array-contains":
      return Array.isArray(value) && value.some((e) => sameValue(e, operand));
    case "array-contains-any":
      return Array.isArray(value) && Array.isArray(operand) && value.some((e) => operand.some((o) => sameValue(e, o)));
    default: {
      if (operand === null) return (op === "<=" || op === ">=") && value === null;
      if (rank(value) !== rank(operand)) return false;
      const c = compareValues(value, operand);
      return op === "<" ? c < 0 : op === "<=" ? c <= 0 : op === ">" ? c > 0 : c >= 0;
    }
  }
}

export function matchesClause(clause: Clause, data: unknown): boolean {
  if (Array.isArray(clause)) {
    const value = field(data, clause[0]);
    return value !== undefined && compare(value, clause[1], clause[2]);
  }
  if ("or" in clause) return clause.or.some((c) => matchesClause(c, data));
  return clause.and.every((c) => matchesClause(c, data));
}

/** Whether a document passes every clause and has every order field. */
export function matches(where: Clause[], order: Order[], doc: Matchable): boolean {
  return order.every(([name]) => field(doc.data, name) !== undefined) && where.every((c) => matchesClause(c, doc.data));
}

/** The query's order, ties broken by path in the direction of the last order field. */
export function comparator(order: Order[]): (a: Matchable, b: Matchable) => number {
  return (a, b) => {
    for (const [name, direction] of order) {
      const c = compareValues(field(a.data, name), field(b.data, name));
      if (c !== 0) return direction === "desc" ? -c : c;
    }
    const tail = textOrder(a.path, b.path);
    return order.at(-1)?.[1] === "desc" ? -tail : tail;
  };
}
