/** Server payloads for component tests, typed by the generated client so they stay true to the API. */
import type {
  CachedRepoOut,
  JobOut,
  LoadedModelOut,
  ModelEstimateOut,
  ModelPreviewOut,
  SaeOut,
  StatusOut,
} from "@/client";

export const demoModel: LoadedModelOut = {
  id: "millm-demo",
  source: "local",
  revision: null,
  device: "cpu",
  dtype: "float32",
  quantization: "none",
  parameters: 3_200_000,
  context_length: 512,
  d_model: 192,
  num_layers: 4,
};

export const demoSae: SaeOut = {
  id: "millm-demo-sae",
  hook_name: "blocks.0.hook_resid_post",
  module: "model.layers.0",
  layer: 0,
  d_in: 192,
  d_sae: 1536,
  architecture: "standard",
  dtype: "float32",
  source_format: "saelens",
  repo_id: null,
  path: null,
  labelled_features: 24,
};

export function status(overrides: Partial<StatusOut> = {}): StatusOut {
  return {
    version: "0.1.0",
    uptime_s: 12.5,
    status: "ok",
    loading: null,
    device: "cpu",
    memory: { device: "cpu", used_bytes: 3 * 1024 ** 3, total_bytes: 32 * 1024 ** 3 },
    host: {
      cpu_count: 16,
      cpu_percent: 12.4,
      process_cpu_percent: 95,
      process_rss_bytes: 3 * 1024 ** 3,
      ram_total_bytes: 32 * 1024 ** 3,
      ram_used_bytes: 8.2 * 1024 ** 3,
    },
    gpus: [],
    downloads: { active: 0, bytes_done: 0, bytes_total: 0, speed_bps: 0 },
    model: demoModel,
    sae: demoSae,
    steering: {
      enabled: true,
      mode: "add",
      normalize: false,
      steer_special_tokens: true,
      features: [{ index: 16, strength: 4, label: "CAPS" }],
      profile: null,
    },
    active_profile: null,
    queue_depth: 2,
    active_sequences: 3,
    max_batch_size: 8,
    ...overrides,
  };
}

export function job(overrides: Partial<JobOut> = {}): JobOut {
  return {
    id: "job-1",
    kind: "model",
    repo_id: "google/gemma-2-2b",
    name: "gemma-2-2b",
    revision: "main",
    path: "",
    state: "running",
    commit: null,
    bytes_done: 1024 ** 3,
    bytes_total: 4 * 1024 ** 3,
    files_done: 1,
    files_total: 4,
    progress: 0.25,
    current_file: "model-00002-of-00003.safetensors",
    error: null,
    speed_bps: 0,
    eta_s: null,
    attempts: 1,
    created_at: "2026-12-06T09:00:00Z",
    updated_at: "2026-12-06T09:00:10Z",
    finished_at: null,
    ...overrides,
  };
}

export function cachedRepo(overrides: Partial<CachedRepoOut> = {}): CachedRepoOut {
  return {
    repo_id: "Qwen/Qwen2.5-0.5B",
    name: "Qwen2.5-0.5B",
    kind: "model",
    size_bytes: 988 * 1024 ** 2,
    nb_files: 6,
    refs: ["main"],
    revisions: [{ commit: "abc123", refs: ["main"], size_bytes: 988 * 1024 ** 2, files: 6 }],
    last_modified: "2026-12-01T12:00:00Z",
    last_used: "2026-12-05T08:30:00Z",
    sae_paths: [],
    in_use: false,
    downloading: false,
    ...overrides,
  };
}

export function estimate(
  overrides: Partial<ModelEstimateOut["estimate"]> = {},
  model = "Qwen/Qwen2.5-0.5B",
): ModelEstimateOut {
  return {
    model,
    source: "cache",
    estimate: {
      params: 494_000_000,
      weights_bytes: 988 * 1024 ** 2,
      kv_cache_bytes: 96 * 1024 ** 2,
      sae_bytes: 0,
      overhead_bytes: 200 * 1024 ** 2,
      total_bytes: 1284 * 1024 ** 2,
      dtype: "float16",
      quantization: "none",
      context: 4096,
      batch: 1,
      device: "cpu",
      available_bytes: 20 * 1024 ** 3,
      fits: true,
      summary: "needs 1.3 GB of 20 GB free",
      ...overrides,
    },
  };
}

export function envelope(message: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type: "invalid_request_error", param, code } };
}

/** GET /api/hub/models/{repo_id}: a gated 7B model with remote code, on a CPU server with 20 GB free. */
export const modelPreview = (): ModelPreviewOut => ({
  repo_id: "org/custom-7b",
  revision: "main",
  commit: "a".repeat(40),
  author: "org",
  downloads: 123456,
  likes: 789,
  pipeline_tag: "text-generation",
  library_name: "transformers",
  model_type: "custom",
  architectures: ["CustomForCausalLM"],
  tags: Array.from({ length: 12 }, (_, i) => `tag-${i}`),
  license: "apache-2.0",
  languages: ["en"],
  gated: "manual",
  private: false,
  needs_remote_code: true,
  trust_remote_code_allowed: true,
  last_modified: null,
  files: 9,
  size_bytes: 14 * 1024 ** 3,
  params: 7_000_000_000,
  context: 4096,
  device: "cpu",
  available_bytes: 20 * 1024 ** 3,
  estimate_error: null,
  estimates: (
    [
      ["fp32", "float32", "none", 28],
      ["fp16", "float16", "none", 14],
      ["bf16", "bfloat16", "none", 14],
      ["8-bit", "auto", "8bit", 7],
      ["4-bit", "auto", "4bit", 3.5],
    ] as const
  ).map(([precision, dtype, quantization, gib]) => ({
    precision,
    dtype,
    quantization,
    weights_bytes: gib * 1024 ** 3,
    kv_cache_bytes: 1024 ** 3,
    sae_bytes: 0,
    overhead_bytes: 0,
    total_bytes: (gib + 1) * 1024 ** 3,
    fits: gib + 1 <= 20,
  })),
});
