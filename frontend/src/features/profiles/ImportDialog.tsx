import { useMutation, useQueryClient } from "@tanstack/react-query";
import { UploadIcon } from "lucide-react";
import { useState } from "react";
import { toast } from "sonner";
import { queryKeys, statusQuery } from "@/api/queries";
import type { ImportResult } from "@/client";
import { importProfiles } from "@/client";
import { Button } from "@/components/ui/button";
import {
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
} from "@/components/ui/dialog";
import { inputClass } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { cn } from "@/lib/cn";
import { type FieldError, parseFieldErrors } from "./fieldErrors";

/** A JSON syntax error as "line L, column C: …" (what JSON.parse says, with its position made readable). */
export function jsonError(text: string): string | null {
  try {
    JSON.parse(text);
    return null;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const pos = /position (\d+)/.exec(msg);
    if (!pos) return `Not valid JSON: ${msg}`;
    const before = text.slice(0, Number(pos[1]));
    const line = before.split("\n").length;
    const column = Number(pos[1]) - before.lastIndexOf("\n");
    return `Not valid JSON at line ${line}, column ${column}: ${msg.replace(/ in JSON at position \d+.*$/, "")}`;
  }
}

/**
 * Import a profile file: miLLM (one profile or a bundle), a Neuronpedia preset or a Goodfire variant. Bad
 * JSON is caught before sending; the server's errors are listed field by field (its `param` paths).
 */
export function ImportDialog() {
  const [open, setOpen] = useState(false);
  const [fileName, setFileName] = useState<string | null>(null);
  const [text, setText] = useState("");
  const [onConflict, setOnConflict] = useState<"error" | "rename" | "replace">("error");
  const [syntax, setSyntax] = useState<string | null>(null);
  const queryClient = useQueryClient();
  const run = useMutation({
    mutationFn: async () =>
      (
        await importProfiles({
          query: { on_conflict: onConflict },
          body: text as never,
          bodySerializer: (b: unknown) => b as string,
          headers: { "Content-Type": "application/json" },
        })
      ).data as ImportResult,
    meta: { inlineError: true },
    onSuccess: (result) => {
      queryClient.invalidateQueries({ queryKey: queryKeys.profiles });
      queryClient.invalidateQueries({ queryKey: statusQuery.queryKey });
      const names = result.profiles.map((p) => p.name).join(", ");
      const renamed = Object.entries(result.renamed ?? {}).map(([a, b]) => `${a} → ${b}`);
      toast.success(
        `Imported ${result.profiles.length} profile${result.profiles.length === 1 ? "" : "s"} (${result.source_format})`,
        {
          description: [names, renamed.length ? `renamed: ${renamed.join(", ")}` : ""]
            .filter(Boolean)
            .join("; "),
        },
      );
      setOpen(false);
    },
  });
  const errors: FieldError[] = run.error ? parseFieldErrors(run.error) : [];

  const reset = () => {
    setFileName(null);
    setText("");
    setSyntax(null);
    run.reset();
  };

  return (
    <>
      <Button
        variant="secondary"
        onClick={() => {
          reset();
          setOpen(true);
        }}
      >
        <UploadIcon aria-hidden="true" /> Import
      </Button>
      <Dialog open={open} onOpenChange={setOpen}>
        <DialogContent className="max-w-2xl">
          <DialogHeader>
            <DialogTitle>Import profiles</DialogTitle>
            <DialogDescription>
              A miLLM profile or bundle, a Neuronpedia preset or a Goodfire variant (JSON). Nothing is saved
              unless every profile in the file is valid.
            </DialogDescription>
          </DialogHeader>
          <form
            className="flex flex-col gap-4"
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              const err = text.trim() ? jsonError(text) : "Choose a file or paste JSON.";
              setSyntax(err);
              run.reset();
              if (!err) run.mutate();
            }}
          >
            <div>
              <Label htmlFor="import-file">Profile file</Label>
              <input
                id="import-file"
                type="file"
                accept="application/json,.json"
                className="block w-full text-sm text-label file:mr-3 file:cursor-pointer file:rounded-md file:border file:border-accent/30 file:bg-accent/10 file:px-3 file:py-1.5 file:text-xs file:font-semibold file:text-accent"
                onChange={async (e) => {
                  const file = e.target.files?.[0];
                  run.reset();
                  if (!file) return;
                  setFileName(file.name);
                  const content = await file.text();
                  setText(content);
                  setSyntax(jsonError(content));
                }}
              />
            </div>
            <div>
              <Label htmlFor="import-json">JSON{fileName ? ` (from ${fileName})` : ""}</Label>
              <textarea
                id="import-json"
                rows={8}
                className={cn(inputClass, "num resize-y text-xs")}
                value={text}
                placeholder='{"format": "millm.profile", "format_version": 1, …}'
                aria-invalid={syntax || errors.length ? true : undefined}
                aria-describedby="import-errors"
                onChange={(e) => {
                  setText(e.target.value);
                  setSyntax(null);
                  run.reset();
                }}
              />
            </div>
            <div>
              <Label htmlFor="import-conflict">If a name is already taken</Label>
              <select
                id="import-conflict"
                className={inputClass}
                value={onConflict}
                onChange={(e) => setOnConflict(e.target.value as typeof onConflict)}
              >
                <option value="error">Refuse the import</option>
                <option value="rename">Import under a new name</option>
                <option value="replace">Replace the existing profile</option>
              </select>
            </div>
            <div id="import-errors" aria-live="polite">
              {syntax && (
                <p role="alert" className="text-sm text-danger">
                  {syntax}
                </p>
              )}
              {errors.length > 0 && (
                <div role="alert" className="rounded-md border border-danger/40 bg-danger/10 p-3">
                  <p className="mb-1 text-sm font-semibold text-danger">
                    The file was not imported ({errors.length} error{errors.length === 1 ? "" : "s"}):
                  </p>
                  <ul className="flex flex-col gap-0.5">
                    {errors.map((e) => (
                      <li key={`${e.path}-${e.message}`} className="text-xs text-danger">
                        {e.path && <code className="num font-semibold text-title">{e.path}</code>}
                        {e.path && ": "}
                        {e.message}
                      </li>
                    ))}
                  </ul>
                </div>
              )}
            </div>
            <DialogFooter>
              <Button variant="secondary" onClick={() => setOpen(false)}>
                Cancel
              </Button>
              <Button type="submit" disabled={run.isPending || !text.trim()}>
                Import file
              </Button>
            </DialogFooter>
          </form>
        </DialogContent>
      </Dialog>
    </>
  );
}
