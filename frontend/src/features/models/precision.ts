import type { ModelLoadIn } from "@/client";

/** The load precisions offered, and how each maps onto the load request's dtype + quantization. */
export type Precision = "fp32" | "fp16" | "bf16" | "8bit" | "4bit";

export const PRECISIONS: {
  value: Precision;
  label: string;
  dtype: NonNullable<ModelLoadIn["dtype"]>;
  quantization: NonNullable<ModelLoadIn["quantization"]>;
  note?: string;
}[] = [
  { value: "fp32", label: "FP32 (full precision)", dtype: "float32", quantization: "none" },
  { value: "fp16", label: "FP16 (half precision)", dtype: "float16", quantization: "none" },
  { value: "bf16", label: "BF16 (bfloat16)", dtype: "bfloat16", quantization: "none" },
  { value: "8bit", label: "8-bit (bitsandbytes)", dtype: "auto", quantization: "8bit", note: "CUDA only" },
  {
    value: "4bit",
    label: "4-bit NF4 (bitsandbytes)",
    dtype: "auto",
    quantization: "4bit",
    note: "CUDA only",
  },
];

export function precisionRequest(p: Precision): Pick<ModelLoadIn, "dtype" | "quantization"> {
  const found = PRECISIONS.find((x) => x.value === p) ?? PRECISIONS[0];
  return { dtype: found.dtype, quantization: found.quantization };
}
