/**
 * ApiError: every failed call of the generated client becomes one of these (see api/client.ts).
 * It carries the OpenAI envelope's `error.message`, `code`, `param` and the HTTP status, plus
 * `hint`: what the user can do next, shown under the message in toasts and inline errors.
 */

import type { ErrorInfo } from "@/client";

export interface ErrorEnvelope {
  error: ErrorInfo;
}

export function isEnvelope(body: unknown): body is ErrorEnvelope {
  return (
    typeof body === "object" &&
    body !== null &&
    "error" in body &&
    typeof (body as ErrorEnvelope).error === "object" &&
    typeof (body as ErrorEnvelope).error?.message === "string"
  );
}

/** What to do next, by error code (then by status). Keep each one short and actionable. */
const HINTS: Record<string, string> = {
  invalid_api_key: "Enter the server's API key (MILLM_API_KEY) when asked.",
  model_not_loaded: "Load a model on the Models tab first.",
  no_sae: "Attach an SAE on the SAEs tab first.",
  insufficient_memory: "Choose a smaller precision (8-bit or 4-bit), or use “Load anyway”.",
  in_use: "Unload the model or detach the SAE that uses it, then try again.",
  repo_not_found: "Check the repo id (owner/name) and its spelling.",
  revision_not_found: "Check the branch, tag or commit.",
  hub_unauthorized: "This repo needs a Hugging Face token: set HF_TOKEN for the server.",
  hub_forbidden: "Accept the model's licence on huggingface.co with the token's account.",
  download_failed: "Check the server's network access to the Hub, then retry.",
  queue_full: "The server is busy; try again in a moment.",
  sae_mismatch: "Pick an SAE trained for this model, or another layer.",
  not_cached: "Download it first.",
  invalid_repo_id: "Use the form owner/name.",
  trust_remote_code_disabled:
    "Start the server with --trust-remote-code (MILLM_TRUST_REMOTE_CODE=1) if you trust this repo's code.",
  trust_remote_code_required:
    "Read the repo's Python files on the Hub; if you trust them, tick “Trust remote code” and load again.",
};

export class ApiError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly param: string | null;
  readonly type: string | null;
  /** The envelope's error object as sent (e.g. `memory_estimate` on an insufficient_memory refusal). */
  readonly info: ErrorInfo | null;

  constructor(
    message: string,
    opts: {
      status: number;
      code?: string | null;
      param?: string | null;
      type?: string | null;
      info?: ErrorInfo;
    },
  ) {
    super(message);
    this.name = "ApiError";
    this.status = opts.status;
    this.code = opts.code ?? null;
    this.param = opts.param ?? null;
    this.type = opts.type ?? null;
    this.info = opts.info ?? null;
  }

  /** Status 0: the request never got an answer (server down, network). */
  get isNetwork(): boolean {
    return this.status === 0;
  }

  get hint(): string | undefined {
    if (this.code && HINTS[this.code]) return HINTS[this.code];
    if (this.isNetwork) return "Check that `millm serve` is running; the UI reconnects by itself.";
    if (this.status === 401) return HINTS.invalid_api_key;
    if (this.status === 503) return "The server is starting or loading a model; try again shortly.";
    if (this.status >= 500) return "See the server log for details.";
    return undefined;
  }

  static from(body: unknown, status: number): ApiError {
    if (body instanceof ApiError) return body;
    if (isEnvelope(body)) {
      const e = body.error;
      return new ApiError(e.message, { status, code: e.code, param: e.param, type: e.type, info: e });
    }
    if (status === 0) {
      return new ApiError("Cannot reach the miLLM server.", { status: 0, code: "network_error" });
    }
    if (typeof body === "string" && body.trim()) return new ApiError(body.trim().slice(0, 300), { status });
    return new ApiError(`The server answered ${status}.`, { status });
  }
}

/** A message for any thrown value (toasts, inline errors). */
export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
