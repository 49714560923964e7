/**
 * The one error the SDK throws: the server's error code (`permission-denied`,
 * `not-found`, …) and its message, or `unavailable` when the server could not
 * be reached.
 */
export class NimbusError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, message: string, status = 0) {
    super(message);
    this.name = "NimbusError";
    this.code = code;
    this.status = status;
  }
}

/** The error a response body of the server's one error shape stands for. */
export function errorFrom(status: number, body: unknown): NimbusError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (error && typeof error.code === "string") {
    return new NimbusError(error.code, String(error.message ?? error.code), status);
  }
  return new NimbusError("unknown", `the server answered ${status}`, status);
}
