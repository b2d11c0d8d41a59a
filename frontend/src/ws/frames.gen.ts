/* Generated from frames.schema.json by scripts/generate.mjs (npm run gen). Do not edit. */

export type Frames = (DownloadEvent | ActivationFrame)

/**
 * One SSE `data:` or WebSocket message. 'state' on every state change, 'progress' while bytes move.
 */
export interface DownloadEvent {
type: ("state" | "progress")
job: JobOut
}
export interface JobOut {
id: string
kind: ("model" | "sae")
repo_id: string
/**
 * The repo name without its namespace.
 */
name: string
revision: string
/**
 * SAE folder inside the repo; '' for models and whole-repo SAEs.
 */
path: string
state: ("queued" | "running" | "completed" | "failed" | "cancelled")
commit: (string | null)
bytes_done: number
bytes_total: number
files_done: number
files_total: number
/**
 * bytes_done / bytes_total, 0..1 (1 when finished).
 */
progress: number
/**
 * Path inside the repo of the file being transferred.
 */
current_file: (string | null)
error: (JobError | null)
attempts: number
/**
 * When the job was submitted (ISO 8601, UTC).
 */
created_at: string
/**
 * Its last change of state or progress (ISO 8601, UTC).
 */
updated_at: string
/**
 * When it completed, failed or was cancelled.
 */
finished_at: (string | null)
}
export interface JobError {
code: (string | null)
message: string
status: number
type: string
param?: (string | null)
}
/**
 * One WebSocket message: SAE activations at one token of one request.
 */
export interface ActivationFrame {
type?: "activation"
request_id: string
choice: number
position: number
token_id: number
token: string
phase: ("prompt" | "generated" | "embedding")
activations: FeatureValue[]
}
export interface FeatureValue {
index: number
value: number
label?: (string | null)
}
