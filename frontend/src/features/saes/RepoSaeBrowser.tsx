import { useQuery } from "@tanstack/react-query";
import { DownloadIcon, FolderSearchIcon, LinkIcon, Loader2Icon, XIcon } from "lucide-react";
import { useId, useMemo, useState } from "react";
import { toast } from "sonner";
import { ApiError, errorMessage } from "@/api/errors";
import { repoSaesQuery, statusQuery } from "@/api/queries";
import type { RepoSaeOut } from "@/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Label } from "@/components/ui/label";
import { Select, SelectContent, SelectItem, SelectTrigger, SelectValue } from "@/components/ui/select";
import { useStartDownload } from "@/features/downloads/useDownloadActions";
import { useActiveDownloads } from "@/features/downloads/useDownloads";
import { formatBytes } from "@/lib/format";

const ALL = "all";

/** 16384 -> "16k", 1048576 -> "1M". */
export function formatWidth(width: number | null): string {
  if (width == null) return "–";
  if (width >= 1 << 20 && width % (1 << 20) === 0) return `${width / (1 << 20)}M`;
  if (width >= 1024 && width % 1024 === 0) return `${width / 1024}k`;
  return width.toLocaleString();
}

function l0Text(s: RepoSaeOut): string {
  if (s.l0 != null) return String(Math.round(s.l0 * 10) / 10);
  return s.l0_label ?? "–";
}

/** SAEs grouped by layer (in the server's order: site, layer, width, L0); SAEs with no layer last. */
export function groupByLayer(saes: RepoSaeOut[]): [number | null, RepoSaeOut[]][] {
  const groups = new Map<number | null, RepoSaeOut[]>();
  for (const s of saes) {
    const list = groups.get(s.layer) ?? [];
    list.push(s);
    groups.set(s.layer, list);
  }
  return [...groups.entries()].sort(
    ([a], [b]) => (a ?? Number.MAX_SAFE_INTEGER) - (b ?? Number.MAX_SAFE_INTEGER),
  );
}

/**
 * Browse a Hub repo's SAEs before downloading: grouped by layer, with site, width, L0 and size; filter by
 * layer (in the URL) and width; select several and download them; attach the ones already cached.
 */
export function RepoSaeBrowser({
  repoId,
  layer,
  onLayerChange,
  onAttach,
  onClose,
}: {
  repoId: string;
  layer: number | undefined;
  onLayerChange: (layer: number | undefined) => void;
  onAttach: (source: string) => void;
  onClose: () => void;
}) {
  const { data, error, isPending, refetch } = useQuery(repoSaesQuery(repoId));
  const { data: status } = useQuery(statusQuery);
  const active = useActiveDownloads("sae");
  const start = useStartDownload();
  const [width, setWidth] = useState<string>(ALL);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const layerId = useId();
  const widthId = useId();

  const all = data?.data ?? [];
  const layers = useMemo(
    () => [...new Set(all.map((s) => s.layer).filter((l): l is number => l != null))].sort((a, b) => a - b),
    [all],
  );
  const widths = useMemo(
    () => [...new Set(all.map((s) => s.width).filter((w): w is number => w != null))].sort((a, b) => a - b),
    [all],
  );
  const shown = all.filter(
    (s) => (layer == null || s.layer === layer) && (width === ALL || String(s.width) === width),
  );
  const groups = groupByLayer(shown);
  const downloading = new Set(active.filter((j) => j.repo_id === repoId).map((j) => j.path));

  const toggle = (paths: string[], on: boolean) =>
    setSelected((prev) => {
      const next = new Set(prev);
      for (const p of paths) {
        if (on) next.add(p);
        else next.delete(p);
      }
      return next;
    });

  const downloadSelected = async () => {
    const paths = [...selected];
    const results = await Promise.allSettled(
      paths.map((path) =>
        start.mutateAsync({ kind: "sae", repo_id: repoId, revision: data?.revision ?? null, path }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    if (ok) toast.success(`Downloading ${ok} SAE${ok === 1 ? "" : "s"} from ${repoId}`);
    setSelected(new Set());
  };

  return (
    <Card
      title={
        <>
          Browse <span className="num text-accent">{repoId}</span>
        </>
      }
      icon={<FolderSearchIcon />}
      actions={
        <Button variant="ghost" onClick={onClose} aria-label="Close the repo browser">
          <XIcon aria-hidden="true" />
        </Button>
      }
    >
      {isPending ? (
        <p className="flex items-center gap-2 py-8 text-sm text-label" role="status">
          <Loader2Icon className="size-4 animate-spin" aria-hidden="true" /> Reading the repo’s SAE folders…
        </p>
      ) : error ? (
        <div role="alert" className="rounded-lg border border-danger/40 bg-danger/10 p-3 text-sm">
          <p className="text-body">{errorMessage(error)}</p>
          {error instanceof ApiError && error.hint && <p className="mt-1 text-label">{error.hint}</p>}
          <Button variant="action" className="mt-3" onClick={() => refetch()}>
            Try again
          </Button>
        </div>
      ) : all.length === 0 ? (
        <p className="py-8 text-center text-sm text-muted">No SAE folders found in {repoId}.</p>
      ) : (
        <>
          <div className="mb-4 flex flex-wrap items-end gap-4">
            <div className="w-48">
              <Label htmlFor={layerId}>Layer</Label>
              <Select
                value={layer == null ? ALL : String(layer)}
                onValueChange={(v) => onLayerChange(v === ALL ? undefined : Number(v))}
              >
                <SelectTrigger id={layerId}>
                  <SelectValue />
                </SelectTrigger>
                <SelectContent>
                  <SelectItem value={ALL}>All layers ({layers.length})</SelectItem>
                  {layers.map((l) => (
                    <SelectItem key={l} value={String(l)}>
                      Layer {l}
                    </SelectItem>
                  ))}
                </SelectContent>
              </Select>
            </div>
            <div className="w-48">
              <Label htmlFor={widthId}>Width</Label>
              <Select value={width} onValueChange={setWidth}>
                <SelectTrigger id={widthId}>
                  <SelectValue />
                </SelectTrigger>
                <SelectContent>
                  <SelectItem value={ALL}>All widths</SelectItem>
                  {widths.map((w) => (
                    <SelectItem key={w} value={String(w)}>
                      {formatWidth(w)}
                    </SelectItem>
                  ))}
                </SelectContent>
              </Select>
            </div>
            <p className="num pb-2.5 text-xs text-muted" aria-live="polite">
              {shown.length} of {all.length} SAEs · commit {data.commit.slice(0, 8)}
            </p>
            <Button
              className="ml-auto"
              disabled={selected.size === 0 || start.isPending}
              onClick={downloadSelected}
            >
              <DownloadIcon aria-hidden="true" />
              Download {selected.size || ""} selected
            </Button>
          </div>
          <div className="max-h-[32rem] overflow-y-auto rounded-lg border border-control/30">
            {groups.map(([l, saes]) => {
              const selectable = saes.filter((s) => !s.cached && !downloading.has(s.path)).map((s) => s.path);
              const allOn = selectable.length > 0 && selectable.every((p) => selected.has(p));
              const heading = l == null ? "No layer" : `Layer ${l}`;
              return (
                <section key={String(l)} aria-label={heading}>
                  <div className="sticky top-0 z-10 flex items-center gap-3 border-b border-control/30 bg-surface px-4 py-2">
                    <h3 className="text-sm font-semibold text-title">
                      {heading} <span className="num font-normal text-muted">({saes.length})</span>
                    </h3>
                    {selectable.length > 0 && (
                      <button
                        type="button"
                        className="ml-auto text-xs text-accent hover:underline"
                        onClick={() => toggle(selectable, !allOn)}
                        aria-label={`${allOn ? "Deselect" : "Select"} all in ${heading}`}
                      >
                        {allOn ? "Deselect all" : "Select all"}
                      </button>
                    )}
                  </div>
                  <table className="w-full text-sm">
                    <thead className="sr-only">
                      <tr>
                        <th scope="col">Select</th>
                        <th scope="col">Folder</th>
                        <th scope="col">Site</th>
                        <th scope="col">Width</th>
                        <th scope="col">L0</th>
                        <th scope="col">Size</th>
                        <th scope="col">Status</th>
                      </tr>
                    </thead>
                    <tbody>
                      {saes.map((s) => {
                        const busy = downloading.has(s.path);
                        return (
                          <tr key={s.path} className="border-b border-control/20 last:border-0">
                            <td className="w-10 px-4 py-2">
                              {!s.cached && !busy && (
                                <input
                                  type="checkbox"
                                  className="size-4 accent-accent-500"
                                  checked={selected.has(s.path)}
                                  onChange={(e) => toggle([s.path], e.target.checked)}
                                  aria-label={`Select ${s.path || repoId}`}
                                />
                              )}
                            </td>
                            <td className="num max-w-0 truncate px-2 py-2 text-body" title={s.path}>
                              {s.path || "(repo root)"}
                            </td>
                            <td className="num px-2 py-2 text-label">{s.site ?? "–"}</td>
                            <td className="num px-2 py-2 text-body">{formatWidth(s.width)}</td>
                            <td className="num px-2 py-2 text-body">L0 {l0Text(s)}</td>
                            <td className="num px-2 py-2 text-label">{formatBytes(s.size_bytes)}</td>
                            <td className="px-4 py-2 text-right whitespace-nowrap">
                              {s.cached ? (
                                <Button
                                  variant="action"
                                  onClick={() => onAttach(s.source)}
                                  disabled={!status?.model}
                                  aria-label={`Attach ${s.source}`}
                                >
                                  <LinkIcon aria-hidden="true" /> Attach
                                </Button>
                              ) : busy ? (
                                <Badge tone="ready">Downloading</Badge>
                              ) : null}
                            </td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                </section>
              );
            })}
          </div>
        </>
      )}
    </Card>
  );
}
