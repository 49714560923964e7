/** Requests to the server: JSON in and out, errors as `NimbusError`. */

import { NimbusError, errorFrom } from "./errors.js";

export interface Answer {
  status: number;
  body: unknown;
}

export class Http {
  readonly base: string;

  constructor(url: string) {
    this.base = url.replace(/\/+$/, "");
  }

  /** One request; resolves with any status (callers decide), rejects when the server cannot be reached. */
  async send(
    method: string,
    path: string,
    body?: unknown,
    token?: string | null,
    extraHeaders: Record<string, string> = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...extraHeaders };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers["authorization"] = `Bearer ${token}`;
    let response: Response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new NimbusError("unavailable", `cannot reach ${this.base}: ${(e as Error).message}`);
    }
    const text = await response.text();
    let parsed: unknown = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    return { status: response.status, body: parsed };
  }

  /** `send`, with any status outside 2xx rejected as a `NimbusError`. */
  async expect(method: string, path: string, body?: unknown, token?: string | null): Promise<unknown> {
    const answer = await this.send(method, path, body, token);
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    throw errorFrom(answer.status, answer.body);
  }
}
