import { CopyIcon, PlayIcon, SquareIcon } from "lucide-react";
import { useState } from "react";
import { toast } from "sonner";
import { toastError } from "@/api/queryClient";
import { Button } from "@/components/ui/button";
import { inputClass } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { getApiKey } from "@/lib/auth";
import { cn } from "@/lib/cn";
import { type PlaygroundRequest, toCurl, toPython } from "./exporters";
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
  variant,
  divergence,
  tone,
  running,
}: {
  variant: VariantStream | undefined;
  divergence: number | null;
  tone: "base" | "steered";
  running: boolean;
}) {
  const mark = divergence != null && variant ? pieceOfToken(variant.pieces, divergence) : -1;
  const title = tone === "base" ? "Unsteered" : "Steered";
  return (
    <section
      aria-label={`${title} answer`}
      className={cn(
        "flex min-h-40 flex-col rounded-lg border p-3",
        tone === "base" ? "border-control/40 bg-surface/30" : "border-accent/30 bg-accent/5",
      )}
    >
      <header className="mb-2 flex items-center justify-between">
        <h3
          className={cn(
            "text-xs font-semibold uppercase tracking-wide",
            tone === "base" ? "text-label" : "text-accent",
          )}
        >
          {title}
        </h3>
        {variant?.done && (
          <span className="num text-xs text-muted">
            {variant.done.tokens} tokens · {variant.done.finish_reason ?? "stopped"}
          </span>
        )}
      </header>
      <div className="text-sm whitespace-pre-wrap text-body" aria-live="off" data-testid={`${tone}-text`}>
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
    </section>
  );
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
 * One prompt, answered unsteered and steered side by side from one seed (POST /api/compare: both are rows of
 * one batch), with Stop and the first divergent token marked; the steered request as curl and Python.
 */
export function Playground({
  model,
  prompt,
  onPromptChange,
  steering,
}: {
  model: string;
  prompt: string;
  onPromptChange: (prompt: string) => void;
  steering: PlaygroundRequest["steering"];
}) {
  const [maxTokens, setMaxTokens] = useState(64);
  const [temperature, setTemperature] = useState(0.7);
  const [seed, setSeed] = useState(42);
  const { run, start, stop } = useCompare();
  const running = run.status === "running";
  const request: PlaygroundRequest = { model, prompt, maxTokens, temperature, seed, steering };
  const baseUrl = typeof window !== "undefined" ? window.location.origin : "http://127.0.0.1:8000";
  const apiKey = getApiKey();

  const submit = () => {
    if (!prompt.trim()) return;
    start({
      model,
      prompt,
      maxTokens,
      temperature,
      seed,
      variants: [
        { label: "Unsteered", steering: null },
        { label: "Steered", steering },
      ],
    });
  };

  return (
    <section aria-labelledby="playground-title" className="card flex flex-col gap-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h2 id="playground-title" className="text-sm font-semibold text-title">
          Playground
        </h2>
        <p className="text-xs text-muted">
          Same prompt and seed, one batch: unsteered vs the {steering?.features.length ?? 0} selected feature
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
      <div className="grid gap-3 md:grid-cols-2">
        <Column variant={run.variants[0]} divergence={run.divergence} tone="base" running={running} />
        <Column variant={run.variants[1]} divergence={run.divergence} tone="steered" running={running} />
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
