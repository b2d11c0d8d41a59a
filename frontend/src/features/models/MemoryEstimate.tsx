import type { MemoryEstimateOut } from "@/client";
import { cn } from "@/lib/cn";
import { formatBytes } from "@/lib/format";

const PARTS = [
  { key: "weights_bytes", label: "Weights", color: "bg-accent" },
  { key: "kv_cache_bytes", label: "KV cache", color: "bg-success" },
  { key: "sae_bytes", label: "SAE", color: "bg-attached" },
  { key: "overhead_bytes", label: "Overhead", color: "bg-label" },
] as const;

/**
 * The memory a load needs, as a stacked bar (weights, KV cache, SAE, overhead) against the free
 * memory on the target device, with the numbers in a table for screen readers and precise reading.
 */
export function MemoryEstimate({ estimate }: { estimate: MemoryEstimateOut }) {
  const free = estimate.available_bytes;
  const scale = Math.max(estimate.total_bytes, free ?? 0, 1);
  const device = estimate.device === "cpu" ? "RAM" : `${estimate.device} memory`;
  const share = free ? estimate.total_bytes / free : null;
  return (
    <figure aria-label="Memory estimate" className="rounded-lg border border-control/30 bg-surface/30 p-4">
      <div className="relative h-4 w-full overflow-hidden rounded-full bg-surface" aria-hidden="true">
        <div className="flex h-full">
          {PARTS.map((p) => (
            <div key={p.key} className={p.color} style={{ width: `${(estimate[p.key] / scale) * 100}%` }} />
          ))}
        </div>
        {free != null && (
          <div
            className="absolute top-0 h-full w-0.5 bg-title"
            style={{ left: `calc(${Math.min(100, (free / scale) * 100)}% - 1px)` }}
          />
        )}
      </div>
      <table className="num mt-3 w-full text-xs">
        <caption className="sr-only">Memory needed to load, by part, and free memory</caption>
        <tbody>
          {PARTS.map((p) => (
            <tr key={p.key}>
              <th scope="row" className="py-0.5 text-left font-normal text-label">
                <span className={cn("mr-2 inline-block size-2 rounded-sm", p.color)} aria-hidden="true" />
                {p.label}
                {p.key === "kv_cache_bytes" && (
                  <span className="text-muted"> ({estimate.context.toLocaleString()} tokens)</span>
                )}
              </th>
              <td className="text-right text-body">{formatBytes(estimate[p.key])}</td>
            </tr>
          ))}
          <tr className="border-t border-control/30">
            <th scope="row" className="pt-1 text-left font-semibold text-title">
              Total needed
            </th>
            <td
              className={cn("pt-1 text-right font-semibold", estimate.fits ? "text-success" : "text-danger")}
            >
              {formatBytes(estimate.total_bytes)}
            </td>
          </tr>
          <tr>
            <th scope="row" className="text-left font-normal text-label">
              Free {device}
            </th>
            <td className="text-right text-body">{free == null ? "unknown" : formatBytes(free)}</td>
          </tr>
        </tbody>
      </table>
      <figcaption
        className={cn(
          "mt-2 text-xs",
          estimate.fits === false ? "text-danger" : estimate.fits ? "text-success" : "text-label",
        )}
      >
        {estimate.fits == null
          ? `${estimate.device} is not on this machine: free memory unknown.`
          : estimate.fits
            ? `Fits in free memory (${share != null && share < 0.01 ? "under 1" : Math.round((share ?? 0) * 100)}% of it).`
            : "Does not fit in free memory: the server will refuse unless you load anyway."}
      </figcaption>
    </figure>
  );
}
