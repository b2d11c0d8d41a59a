import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { ExternalLinkIcon, SearchIcon } from "lucide-react";
import { useDeferredValue, useId, useState } from "react";
import { errorMessage } from "@/api/errors";
import { queryKeys } from "@/api/queries";
import { searchFeatureLabels } from "@/client";
import { Input } from "@/components/ui/input";

const LIMIT = 50;

/** Neuronpedia's page of one feature, for an SAE whose config names its Neuronpedia id. */
export function neuronpediaUrl(neuronpediaId: string, index: number): string {
  return `https://www.neuronpedia.org/${neuronpediaId.split("/").map(encodeURIComponent).join("/")}/${index}`;
}

/** The attached SAE's labelled features, searchable by label text or index, each linked to Neuronpedia when it has an id. */
export function FeatureLabelList({ total, neuronpediaId }: { total: number; neuronpediaId?: string | null }) {
  const [q, setQ] = useState("");
  const query = useDeferredValue(q.trim());
  const id = useId();
  const { data, error, isPending } = useQuery({
    queryKey: [...queryKeys.saeLabels, { q: query, limit: LIMIT }],
    queryFn: async ({ signal }) =>
      (await searchFeatureLabels({ signal, query: { q: query || null, limit: LIMIT } })).data,
    placeholderData: keepPreviousData,
  });

  if (total === 0) return <p className="text-sm text-muted">This SAE has no feature labels.</p>;
  return (
    <div>
      <label htmlFor={id} className="sr-only">
        Search feature labels
      </label>
      <div className="relative">
        <SearchIcon
          className="absolute top-1/2 left-3 size-4 -translate-y-1/2 text-muted"
          aria-hidden="true"
        />
        <Input
          id={id}
          value={q}
          onChange={(e) => setQ(e.target.value)}
          placeholder={`Search ${total.toLocaleString()} labelled features`}
          className="pl-9"
          type="search"
        />
      </div>
      {isPending ? (
        <p className="py-6 text-center text-sm text-muted">Loading labels…</p>
      ) : error ? (
        <p className="py-6 text-center text-sm text-danger">{errorMessage(error)}</p>
      ) : data.data.length === 0 ? (
        <p className="py-6 text-center text-sm text-muted">No label matches “{query}”.</p>
      ) : (
        <div className="mt-3 max-h-72 overflow-y-auto rounded-lg border border-control/30">
          <table className="w-full table-fixed text-sm">
            <thead className="sticky top-0 bg-surface">
              <tr>
                <th
                  scope="col"
                  className="px-4 py-2 text-left text-[11px] font-semibold tracking-wider text-muted uppercase"
                >
                  Feature
                </th>
                <th
                  scope="col"
                  className="px-4 py-2 text-left text-[11px] font-semibold tracking-wider text-muted uppercase"
                >
                  Label
                </th>
                {neuronpediaId && (
                  <th
                    scope="col"
                    className="w-32 px-4 py-2 text-left text-[11px] font-semibold tracking-wider text-muted uppercase"
                  >
                    Neuronpedia
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {data.data.map((f) => (
                <tr key={f.index} className="border-t border-control/20">
                  <td className="num px-4 py-2 text-accent">#{f.index}</td>
                  <td className="px-4 py-2 text-body">{f.label}</td>
                  {neuronpediaId && (
                    <td className="px-4 py-2">
                      <a
                        href={neuronpediaUrl(neuronpediaId, f.index)}
                        target="_blank"
                        rel="noopener noreferrer"
                        className="inline-flex items-center gap-1 text-accent underline-offset-2 hover:underline"
                        aria-label={`Feature ${f.index} on Neuronpedia (opens in a new tab)`}
                      >
                        Open <ExternalLinkIcon className="size-3" aria-hidden="true" />
                      </a>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {data && data.count > data.data.length && (
        <p className="mt-2 text-xs text-muted">
          Showing {data.data.length} of {data.count.toLocaleString()}; refine the search to see others.
        </p>
      )}
    </div>
  );
}
