/**
 * Typed values: the server's timestamps (`{"$timestamp": "<RFC 3339>"}` on the
 * wire) as `Timestamp`, and the field transforms a write may carry.
 */

/** A point in time, as the server stores it (microsecond precision). */
export class Timestamp {
  /** RFC 3339, as the server wrote it. */
  readonly iso: string;

  constructor(iso: string) {
    this.iso = iso;
  }

  static now(): Timestamp {
    return Timestamp.fromDate(new Date());
  }

  static fromDate(date: Date): Timestamp {
    return new Timestamp(date.toISOString());
  }

  toDate(): Date {
    return new Date(this.toMillis());
  }

  toMillis(): number {
    return Date.parse(this.iso);
  }

  toJSON(): { $timestamp: string } {
    return { $timestamp: this.iso };
  }

  /** The same instant (to the nanosecond), however the text was written. */
  isEqual(other: Timestamp): boolean {
    return this.toMillis() === other.toMillis() && subMillis(this.iso) === subMillis(other.iso);
  }
}

/** The digits after the millisecond of an RFC 3339 text's fraction ("123456Z" → "456000"). */
const subMillis = (iso: string) => (/\.(\d+)/.exec(iso)?.[1] ?? "").padEnd(9, "0").slice(3, 9);

/** The commit time of the write (equal to the document's `updateTime`). */
export const serverTimestamp = () => ({ $serverTimestamp: true }) as const;
/** Adds `n` to the current number (a missing field counts as 0). */
export const increment = (n: number) => ({ $increment: n });
/** Adds the values not already in the array. */
export const arrayUnion = (...values: unknown[]) => ({ $arrayUnion: values });
/** Removes every occurrence of the values from the array. */
export const arrayRemove = (...values: unknown[]) => ({ $arrayRemove: values });
/** Removes the field (`update` only). */
export const deleteField = () => ({ $delete: true }) as const;

/** Wire JSON → SDK values: `{"$timestamp"}` objects become `Timestamp`s. */
export function fromWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    const only = entries.length === 1 ? entries[0] : undefined;
    if (only && only[0] === "$timestamp" && typeof only[1] === "string") return new Timestamp(only[1]);
    return Object.fromEntries(entries.map(([k, v]) => [k, fromWire(v)]));
  }
  return value;
}
