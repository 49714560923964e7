/**
 * Auth: sign-up and sign-in (password, anonymous), linking an anonymous user
 * to a password, sign-out, the current user and its changes, and tokens that
 * refresh by themselves shortly before they expire (concurrent refreshes
 * collapse into one). Listeners are called outside any pending operation, so
 * they may call the SDK.
 */

import { NimbusError } from "./errors.js";
import { Http } from "./http.js";

export interface User {
  id: string;
  email: string | null;
  emailVerified: boolean;
  anonymous: boolean;
  displayName: string | null;
  createdAt: string;
  claims: Record<string, unknown>;
}

/** Where the session is kept: memory by default, `localStorage` fits. */
export interface Storage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export class MemoryStorage implements Storage {
  private items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

interface Session {
  accessToken: string;
  refreshToken: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  /** How long the token lived when issued (ms). */
  lifetime: number;
  user: User;
}

const KEY = "nimbus.session";
/** A token this close to its expiry (or a quarter of its life, if shorter) is refreshed before use. */
const REFRESH_MARGIN_MS = 30_000;

export type AuthListener = (user: User | null) => void;

export class Auth {
  private session: Session | null;
  private listeners = new Set<AuthListener>();
  private tokenListeners = new Set<(token: string | null) => void>();
  private refreshing: Promise<Session | null> | null = null;

  constructor(
    private readonly http: Http,
    private readonly storage: Storage,
  ) {
    this.session = readSession(storage);
  }

  get currentUser(): User | null {
    return this.session?.user ?? null;
  }

  /** Called (in a microtask) whenever the access token changes: a sign-in, a refresh, a sign-out. */
  onTokenChanged(listener: (token: string | null) => void): () => void {
    this.tokenListeners.add(listener);
    return () => this.tokenListeners.delete(listener);
  }

  /** Calls `listener` now (in a microtask) with the current user, then on every change; returns an unsubscribe. */
  onAuthStateChanged(listener: AuthListener): () => void {
    this.listeners.add(listener);
    queueMicrotask(() => {
      if (this.listeners.has(listener)) listener(this.currentUser);
    });
    return () => this.listeners.delete(listener);
  }

  async signUp(credentials: { email: string; password: string }): Promise<User> {
    return this.start(await this.http.expect("POST", "/v1/auth/signup", credentials));
  }

  async signIn(credentials: { email: string; password: string }): Promise<User> {
    return this.start(await this.http.expect("POST", "/v1/auth/token", { grant_type: "password", ...credentials }));
  }

  async signInAnonymously(): Promise<User> {
    return this.start(await this.http.expect("POST", "/v1/auth/token", { grant_type: "anonymous" }));
  }

  /** Makes the signed-in anonymous user a password user, keeping its id and data. */
  async linkWithPassword(credentials: { email: string; password: string }): Promise<User> {
    const user = (await this.http.expect("PATCH", "/v1/auth/user", credentials, await this.requireToken())) as User;
    return this.replaceUser(user);
  }

  async updateUser(change: {
    displayName?: string | null;
    email?: string;
    password?: string;
    currentPassword?: string;
  }): Promise<User> {
    const user = (await this.http.expect("PATCH", "/v1/auth/user", change, await this.requireToken())) as User;
    return this.replaceUser(user);
  }

  async sendPasswordReset(email: string): Promise<void> {
    await this.http.expect("POST", "/v1/auth/recover", { email });
  }

  async signOut(): Promise<void> {
    const token = this.session?.accessToken;
    this.set(null);
    if (token) await this.http.send("POST", "/v1/auth/logout", undefined, token).catch(() => undefined);
  }

  /** A current access token (refreshed first when it is about to expire), or `null` when signed out. */
  async getIdToken(forceRefresh = false): Promise<string | null> {
    const session = this.session;
    if (!session) return null;
    const margin = Math.min(REFRESH_MARGIN_MS, (session.lifetime ?? 0) / 4);
    if (forceRefresh || session.expiresAt - margin <= Date.now()) {
      return (await this.refresh())?.accessToken ?? null;
    }
    return session.accessToken;
  }

  private async requireToken(): Promise<string> {
    const token = await this.getIdToken();
    if (!token) throw new NimbusError("unauthenticated", "sign in first");
    return token;
  }

  /** One refresh at a time: concurrent callers share it. A refused refresh signs out. */
  private refresh(): Promise<Session | null> {
    if (!this.refreshing) {
      const session = this.session;
      this.refreshing = (async () => {
        if (!session) return null;
        const answer = await this.http.send("POST", "/v1/auth/token", {
          grant_type: "refresh_token",
          refresh_token: session.refreshToken,
        });
        if (answer.status === 200) {
          this.start(answer.body);
          return this.session;
        }
        if (answer.status === 400 || answer.status === 401) this.set(null);
        return this.session;
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private start(body: unknown): User {
    const answer = body as { user: User; access_token: string; refresh_token: string; expires_in: number };
    this.set({
      accessToken: answer.access_token,
      refreshToken: answer.refresh_token,
      expiresAt: Date.now() + answer.expires_in * 1000,
      lifetime: answer.expires_in * 1000,
      user: answer.user,
    });
    return answer.user;
  }

  private replaceUser(user: User): User {
    if (this.session) this.set({ ...this.session, user });
    return user;
  }

  private set(session: Session | null): void {
    const before = this.session;
    this.session = session;
    if (session) this.storage.setItem(KEY, JSON.stringify(session));
    else this.storage.removeItem(KEY);
    const userChanged = JSON.stringify(before?.user ?? null) !== JSON.stringify(session?.user ?? null);
    const tokenChanged = before?.accessToken !== session?.accessToken;
    const user = this.currentUser;
    const token = session?.accessToken ?? null;
    // Listeners run after this call returns, never inside it.
    queueMicrotask(() => {
      if (userChanged) for (const listener of [...this.listeners]) listener(user);
      if (tokenChanged) for (const listener of [...this.tokenListeners]) listener(token);
    });
  }
}

function readSession(storage: Storage): Session | null {
  try {
    const text = storage.getItem(KEY);
    return text ? (JSON.parse(text) as Session) : null;
  } catch {
    return null;
  }
}
