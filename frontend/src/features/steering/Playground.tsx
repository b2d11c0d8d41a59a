import { useQuery } from "@tanstack/react-query";
import { CopyIcon, PlayIcon, PlusIcon, SquareIcon, XIcon } from "lucide-react";
import { useMemo, useState } from "react";
import { toast } from "sonner";
import { profilesQuery } from "@/api/queries";
import { toastError } from "@/api/queryClient";
import { Button } from "@/components/ui/button";
import { inputClass } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { getApiKey } from "@/lib/auth";
import { cn } from "@/lib/cn";
import { type PlaygroundRequest, toCurl, toPython } from "./exporters";
import { parseFeatureList } from "./features";
import {
  type ColumnKind,
  type ColumnSpec,
  columnTitles,
  DEFAULT_COLUMNS,
  decodeColumns,
  encodeColumns,
  MAX_VARIANTS,
  toVariants,
} from "./playgroundVariants";
import { useCompare, type VariantStream } from "./useCompare";

/** Which piece (delta) holds token `token`, counting the pieces' token ids. */
export function pieceOfToken(pieces: VariantStream["pieces"], token: number): number {
  let seen = 0;
  for (let i = 0; i < pieces.length; i++) {
    seen += Math.max(1, pieces[i].tokenIds.length);
    if (token < seen) return i;
  }
  return -1;
}

function Column({
  title,
  index,
  variant,
  divergence,
  running,
  onRemove,
}: {
  title: string;
  index: number;
  variant: VariantStream | undefined;
  divergence: number | null;
  running: boolean;
  onRemove?: () => void;
}) {
  const mark = divergence != null && variant ? pieceOfToken(variant.pieces, divergence) : -1;
  const base = index === 0;
  const testId = index === 0 ? "base-text" : index === 1 ? "steered-text" : `variant-${index}-text`;
  return (
    <section
      aria-label={`${title} answer`}
      className={cn(
        "flex min-h-40 min-w-0 flex-col rounded-lg border p-3",
        base ? "border-control/40 bg-surface/30" : "border-accent/30 bg-accent/5",
      )}
    >
      <header className="mb-2 flex items-start justify-between gap-2">
        <h3
          className={cn(
            "truncate text-xs font-semibold uppercase tracking-wide",
            base ? "text-label" : "text-accent",
          )}
          title={title}
        >
          {title}
          {base && <span className="ml-1 font-normal normal-case text-muted">(baseline)</span>}
        </h3>
        <span className="flex shrink-0 items-center gap-1">
          {variant?.done && (
            <span className="num text-xs text-muted">
              {variant.done.tokens} tokens · {variant.done.finish_reason ?? "stopped"}
            </span>
          )}
          {onRemove && (
            <Button
              variant="ghost"
              size="icon"
              aria-label={`Remove column ${title}`}
              onClick={onRemove}
              disabled={running}
            >
              <XIcon aria-hidden="true" />
            </Button>
          )}
        </span>
      </header>
      <div className="text-sm whitespace-pre-wrap break-words text-body" aria-live="off" data-testid={testId}>
        {variant?.pieces.length ? (
          variant.pieces.map((p, i) =>
            i === mark ? (
              <mark
                // biome-ignore lint/suspicious/noArrayIndexKey: pieces only grow
                key={i}
                className="rounded-sm bg-warning/25 text-title underline decoration-warning decoration-2"
                title={`First token where the answers differ (token ${divergence})`}
                data-testid="divergence"
              >
                <span className="sr-only">(first divergent token)</span>
                {p.text}
              </mark>
            ) : (
              // biome-ignore lint/suspicious/noArrayIndexKey: pieces only grow
              <span key={i}>{p.text}</span>
            ),
          )
        ) : (
          <span className="text-muted italic">
            {running ? "Waiting for tokens…" : "Run to see the answer."}
          </span>
        )}
      </div>
      {!base && variant?.done && (
        <p className="num mt-2 text-xs text-muted">
          {divergence == null
            ? "Identical to the baseline"
            : `Differs from the baseline at token ${divergence}`}
        </p>
      )}
    </section>
  );
}

/** Add a column: unsteered, the current selection, a saved profile, or a custom feature list. */
function AddColumn({
  profiles,
  dSae,
  disabled,
  onAdd,
}: {
  profiles: string[];
  dSae: number;
  disabled: boolean;
  onAdd: (spec: ColumnKind) => void;
}) {
  const [choice, setChoice] = useState("current");
  const [text, setText] = useState("");
  const error = choice === "custom" && text.trim() ? customError(text, dSae) : null;
  const add = () => {
    if (choice === "unsteered" || choice === "current") onAdd({ kind: choice });
    else if (choice === "custom") {
      if (!text.trim() || error) return;
      onAdd({ kind: "custom", text: text.trim() });
      setText("");
    } else onAdd({ kind: "profile", profile: choice.slice("profile:".length) });
  };
  return (
    <div className="flex flex-wrap items-end gap-2">
      <div>
        <Label htmlFor="pg-new-column">New column</Label>
        <select
          id="pg-new-column"
          className={cn(inputClass, "px-2 py-1.5")}
          value={choice}
          onChange={(e) => setChoice(e.target.value)}
        >
          <option value="unsteered">Unsteered</option>
          <option value="current">Current steering</option>
          {profiles.map((p) => (
            <option key={p} value={`profile:${p}`}>
              Profile {p}
            </option>
          ))}
          <option value="custom">Custom features…</option>
        </select>
      </div>
      {choice === "custom" && (
        <div className="min-w-48 flex-1">
          <Label htmlFor="pg-custom">Custom features</Label>
          <input
            id="pg-custom"
            className={cn(inputClass, "num px-2 py-1.5")}
            placeholder="16:5, 40:-2"
            value={text}
            aria-invalid={error ? true : undefined}
            aria-describedby={error ? "pg-custom-error" : undefined}
            onChange={(e) => setText(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter") {
                e.preventDefault();
                add();
              }
            }}
          />
          {error && (
            <p id="pg-custom-error" className="mt-1 text-xs text-danger">
              {error}
            </p>
          )}
        </div>
      )}
      <Button
        variant="secondary"
        onClick={add}
        disabled={disabled || (choice === "custom" && (!text.trim() || error != null))}
      >
        <PlusIcon aria-hidden="true" /> Add column
      </Button>
    </div>
  );
}

function customError(text: string, dSae: number): string | null {
  const { entries, errors } = parseFeatureList(text, dSae);
  if (errors.length) return `${errors[0].entry}: ${errors[0].message}`;
  return entries.length ? null : "Give at least one feature";
}

function CopyBlock({ code, label }: { code: string; label: string }) {
  return (
    <div className="relative">
      <pre className="num max-h-72 overflow-auto rounded-lg border border-control/30 bg-page-0/60 p-3 text-xs text-body">
        <code>{code}</code>
      </pre>
      <Button
        variant="action"
        size="sm"
        className="absolute top-2 right-2"
        aria-label={`Copy ${label}`}
        onClick={() =>
          navigator.clipboard
            .writeText(code)
            .then(() => toast.success(`${label} copied`))
            .catch((e) => toastError(e, "Could not copy"))
        }
      >
        <CopyIcon aria-hidden="true" /> Copy
      </Button>
    </div>
  );
}

/**
 * One prompt answered in up to 8 columns side by side from one seed (POST /api/compare: every column is a row of
 * one batch): unsteered, the current steering, saved profiles or custom feature lists. Stop; each column's first
 * token that differs from the first column is marked. The steered request as curl and Python.
 */
export function Playground({
  model,
  prompt,
  onPromptChange,
  steering,
  dSae = Number.MAX_SAFE_INTEGER,
  columnsParam,
  onColumnsChange,
}: {
  model: string;
  prompt: string;
  onPromptChange: (prompt: string) => void;
  steering: PlaygroundRequest["steering"];
  /** The attached SAE's width, to check custom feature lists. */
  dSae?: number;
  /** The columns as the URL keeps them (`?columns=`, see playgroundVariants.ts); without it, local state. */
  columnsParam?: string;
  onColumnsChange?: (param: string | undefined) => void;
}) {
  const [localColumns, setLocalColumns] = useState<ColumnSpec[]>(DEFAULT_COLUMNS);
  const columns = useMemo(
    () => (onColumnsChange ? decodeColumns(columnsParam) : localColumns),
    [onColumnsChange, columnsParam, localColumns],
  );
  const setColumns = (update: (c: ColumnSpec[]) => ColumnSpec[]) => {
    const next = update(columns).map((c, id) => ({ ...c, id }));
    if (onColumnsChange) onColumnsChange(encodeColumns(next));
    else setLocalColumns(next);
  };
  const { data: profileList } = useQuery(profilesQuery);
  const profileNames = useMemo(() => (profileList?.data ?? []).map((p) => p.name), [profileList]);
  const titles = columnTitles(columns);
  const [columnError, setColumnError] = useState<string | null>(null);
  const [maxTokens, setMaxTokens] = useState(64);
  const [temperature, setTemperature] = useState(0.7);
  const [seed, setSeed] = useState(42);
  const { run, start, stop, reset } = useCompare();
  const running = run.status === "running";
  const request: PlaygroundRequest = { model, prompt, maxTokens, temperature, seed, steering };
  const baseUrl = typeof window !== "undefined" ? window.location.origin : "http://127.0.0.1:8000";
  const apiKey = getApiKey();

  const submit = () => {
    if (!prompt.trim()) return;
    const { variants, error } = toVariants(columns, steering, dSae);
    setColumnError(error);
    if (error) return;
    start({ model, prompt, maxTokens, temperature, seed, variants });
  };
  // The columns of the last run, as they were when it started (editing columns does not reshuffle a run).
  const shownTitles = run.status === "idle" ? titles : run.variants.map((v) => v.label);

  return (
    <section aria-labelledby="playground-title" className="card flex flex-col gap-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h2 id="playground-title" className="text-sm font-semibold text-title">
          Playground
        </h2>
        <p className="text-xs text-muted">
          Same prompt and seed, one batch: up to {MAX_VARIANTS} columns (now {columns.length}), each compared
          with the first. &ldquo;Steered&rdquo; is the {steering?.features.length ?? 0} selected feature
          {steering?.features.length === 1 ? "" : "s"}.
        </p>
      </div>
      <form
        className="flex flex-col gap-3"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <div>
          <Label htmlFor="playground-prompt">Prompt</Label>
          <textarea
            id="playground-prompt"
            className={cn(inputClass, "resize-y")}
            rows={3}
            value={prompt}
            placeholder="Tell me about the weather."
            onChange={(e) => onPromptChange(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
                e.preventDefault();
                submit();
              }
            }}
          />
        </div>
        <div className="flex flex-wrap items-end gap-3">
          <NumberField
            id="pg-max-tokens"
            label="Max tokens"
            value={maxTokens}
            onChange={setMaxTokens}
            min={1}
            step={1}
          />
          <NumberField
            id="pg-temperature"
            label="Temperature"
            value={temperature}
            onChange={setTemperature}
            min={0}
            max={2}
            step={0.1}
          />
          <NumberField id="pg-seed" label="Seed" value={seed} onChange={setSeed} step={1} />
          <div className="ml-auto flex gap-2">
            {running ? (
              <Button variant="danger" className="px-5 py-3 text-sm" onClick={stop}>
                <SquareIcon aria-hidden="true" /> Stop
              </Button>
            ) : (
              <Button type="submit" disabled={!prompt.trim()}>
                <PlayIcon aria-hidden="true" /> Run
              </Button>
            )}
          </div>
        </div>
      </form>
      <p className="text-xs text-label" aria-live="polite" role="status">
        {run.status === "running" && "Generating…"}
        {run.status === "stopped" && "Stopped."}
        {run.status === "done" &&
          (run.divergence == null
            ? `Done (seed ${run.seed}): the answers are identical.`
            : `Done (seed ${run.seed}): the answers differ from token ${run.divergence} on (marked).`)}
      </p>
      {run.error && (
        <div role="alert" className="rounded-md border border-danger/40 bg-danger/10 p-3 text-sm text-danger">
          {run.error.message}
          {run.error.hint && <span className="block text-xs text-label">{run.error.hint}</span>}
        </div>
      )}
      <AddColumn
        profiles={profileNames}
        dSae={dSae}
        disabled={running || columns.length >= MAX_VARIANTS}
        onAdd={(spec) => {
          setColumns((c) => (c.length >= MAX_VARIANTS ? c : [...c, { ...spec, id: c.length }]));
          reset();
        }}
      />
      {columnError && (
        <p role="alert" className="text-xs text-danger">
          {columnError}
        </p>
      )}
      <div
        className={cn(
          "grid gap-3",
          shownTitles.length <= 2
            ? "md:grid-cols-2"
            : "grid-cols-[repeat(auto-fill,minmax(min(100%,18rem),1fr))]",
        )}
      >
        {shownTitles.map((title, i) => (
          <Column
            key={title /* unique: columnTitles numbers repeats */}
            title={title}
            index={i}
            variant={run.variants[i]}
            divergence={i === 0 ? run.divergence : (run.divergences[i] ?? null)}
            running={running}
            onRemove={
              columns.length > 1
                ? () => {
                    setColumns((c) => c.filter((_, j) => j !== i));
                    reset();
                  }
                : undefined
            }
          />
        ))}
      </div>
      <details className="group">
        <summary className="cursor-pointer text-xs font-semibold text-label hover:text-body">
          The steered request as code
        </summary>
        <Tabs defaultValue="curl" className="mt-2">
          <TabsList aria-label="Code format">
            <TabsTrigger value="curl">curl</TabsTrigger>
            <TabsTrigger value="python">Python (openai)</TabsTrigger>
          </TabsList>
          <TabsContent value="curl">
            <CopyBlock code={toCurl(request, baseUrl, apiKey)} label="curl command" />
          </TabsContent>
          <TabsContent value="python">
            <CopyBlock code={toPython(request, baseUrl, apiKey)} label="Python code" />
          </TabsContent>
        </Tabs>
      </details>
    </section>
  );
}

function NumberField({
  id,
  label,
  value,
  onChange,
  min,
  max,
  step,
}: {
  id: string;
  label: string;
  value: number;
  onChange: (v: number) => void;
  min?: number;
  max?: number;
  step?: number;
}) {
  const [text, setText] = useState(String(value));
  const n = Number(text);
  const invalid =
    text.trim() === "" || !Number.isFinite(n) || (min != null && n < min) || (max != null && n > max);
  return (
    <div className="w-28">
      <Label htmlFor={id}>{label}</Label>
      <input
        id={id}
        type="number"
        className={cn(inputClass, "num px-2 py-1.5")}
        value={text}
        min={min}
        max={max}
        step={step}
        aria-invalid={invalid || undefined}
        onChange={(e) => {
          setText(e.target.value);
          const v = Number(e.target.value);
          if (
            e.target.value.trim() !== "" &&
            Number.isFinite(v) &&
            !(min != null && v < min) &&
            !(max != null && v > max)
          )
            onChange(v);
        }}
      />
    </div>
  );
}
