/**
 * The realtime connection: one WebSocket per client, shared by every
 * listener, opened with the first and closed after the last. It signs in
 * with the current token (again after every refresh, sign-in or sign-out),
 * reconnects with backoff and resumes each subscription from the last
 * position it received; a `resync` is followed by a fresh snapshot, which
 * listeners take as a whole new state.
 */

import { NimbusError } from "./errors.js";

export interface Frame {
  type: string;
  id?: string | number | null;
  documents?: WireDocument[];
  changes?: { type: "added" | "modified" | "removed"; document: WireDocument }[];
  position?: number;
  reason?: string;
  error?: { code: string; message: string };
}

export interface WireDocument {
  id: string;
  path: string;
  version?: number;
  createTime?: string;
  updateTime?: string;
  data?: unknown;
}

/** What a subscription asks for: `{query}` or `{doc}`. */
export type Target = { query: Record<string, unknown> } | { doc: string };

export interface Subscriber {
  target: Target;
  /** The last position received, to resume from. */
  position?: number;
  /** Limited queries cannot resume (the server would resync): they start over. */
  resumable: boolean;
  onFrame(frame: Frame): void;
  onError(error: NimbusError): void;
}

type WebSocketLike = {
  readyState: number;
  send(data: string): void;
  close(): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
};
export type WebSocketClass = new (url: string) => WebSocketLike;

const OPEN = 1;
const MAX_BACKOFF_MS = 10_000;

export class Realtime {
  private socket: WebSocketLike | null = null;
  private subscribers = new Map<string, Subscriber>();
  private nextId = 1;
  private backoff = 250;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly url: string,
    private readonly socketClass: WebSocketClass | undefined,
    private readonly token: () => Promise<string | null>,
    /** Called each time the connection opens (the server is reachable again). */
    private readonly opened: () => void = () => undefined,
  ) {}

  /** Whether server changes can reach listeners now. */
  get connected(): boolean {
    return this.socket?.readyState === OPEN;
  }

  subscribe(subscriber: Subscriber): () => void {
    const id = String(this.nextId++);
    this.subscribers.set(id, subscriber);
    if (this.socket?.readyState === OPEN) this.sendSubscribe(id, subscriber);
    else this.connect();
    return () => {
      if (!this.subscribers.delete(id)) return;
      if (this.socket?.readyState === OPEN) this.send({ type: "unsubscribe", id });
      if (this.subscribers.size === 0) this.disconnect();
    };
  }

  /** Tells the server about a new token (sign-in, refresh, sign-out). */
  async reauthenticate(): Promise<void> {
    if (this.socket?.readyState !== OPEN) return;
    this.send({ type: "auth", token: await this.token() });
  }

  private connect(): void {
    if (this.socket || this.reconnectTimer) return;
    const Socket = this.socketClass ?? (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
    if (!Socket) {
      const error = new NimbusError("failed-precondition", "no WebSocket: pass one to createClient({ WebSocket })");
      for (const subscriber of this.subscribers.values()) subscriber.onError(error);
      this.subscribers.clear();
      return;
    }
    const socket = new Socket(this.url.replace(/^http/, "ws") + "/v1/realtime");
    this.socket = socket;
    socket.onopen = async () => {
      this.backoff = 250;
      const token = await this.token();
      if (this.socket !== socket) return;
      if (token) this.send({ type: "auth", token });
      for (const [id, subscriber] of this.subscribers) this.sendSubscribe(id, subscriber);
      this.opened();
    };
    socket.onmessage = (event) => this.receive(String(event.data));
    socket.onclose = () => this.lost(socket);
    socket.onerror = () => undefined;
  }

  private lost(socket: WebSocketLike): void {
    if (this.socket !== socket) return;
    this.socket = null;
    if (this.subscribers.size === 0) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private disconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  private sendSubscribe(id: string, subscriber: Subscriber): void {
    const resume = subscriber.resumable && subscriber.position !== undefined;
    this.send({ type: "subscribe", id, ...subscriber.target, ...(resume ? { resumeFrom: subscriber.position } : {}) });
  }

  private send(message: unknown): void {
    this.socket?.send(JSON.stringify(message));
  }

  private receive(text: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(text) as Frame;
    } catch {
      return;
    }
    const subscriber = frame.id == null ? undefined : this.subscribers.get(String(frame.id));
    if (frame.type === "error") {
      const error = new NimbusError(frame.error?.code ?? "unknown", frame.error?.message ?? "realtime error");
      if (subscriber && frame.id != null) {
        this.subscribers.delete(String(frame.id));
        subscriber.onError(error);
      }
      return;
    }
    if (!subscriber) return;
    if (typeof frame.position === "number") subscriber.position = frame.position;
    subscriber.onFrame(frame);
  }
}
