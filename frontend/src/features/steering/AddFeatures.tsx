import { PlusIcon } from "lucide-react";
import { useState } from "react";
import { Button } from "@/components/ui/button";
import { Input, inputClass } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { cn } from "@/lib/cn";
import { type EntryError, indexError, type ParsedEntry, parseFeatureList } from "./features";

/** Add one feature by its index (validated against d_sae inline). */
export function AddByIndex({ dSae, onAdd }: { dSae: number; onAdd: (index: number) => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = () => {
    const err = indexError(text, dSae);
    setError(err);
    if (err) return;
    onAdd(Number(text.trim().replace("#", "")));
    setText("");
  };
  return (
    <form
      className="flex flex-col gap-1"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
      noValidate
    >
      <Label htmlFor="add-index">Feature index (0–{dSae - 1})</Label>
      <div className="flex gap-2">
        <Input
          id="add-index"
          inputMode="numeric"
          className="num"
          placeholder="e.g. 16"
          value={text}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "add-index-error" : undefined}
          onChange={(e) => {
            setText(e.target.value);
            setError(null);
          }}
        />
        <Button type="submit" variant="action">
          <PlusIcon aria-hidden="true" /> Add feature
        </Button>
      </div>
      {error && (
        <p id="add-index-error" role="alert" className="text-xs text-danger">
          {error}
        </p>
      )}
    </form>
  );
}

/** Paste a list ("16, 40:2.5, 7=-1"): each bad entry gets its own inline error; good ones are added. */
export function PasteList({ dSae, onAdd }: { dSae: number; onAdd: (entries: ParsedEntry[]) => void }) {
  const [text, setText] = useState("");
  const [errors, setErrors] = useState<EntryError[]>([]);
  const submit = () => {
    const { entries, errors } = parseFeatureList(text, dSae);
    setErrors(errors);
    if (entries.length) onAdd(entries);
    // Keep only the bad entries in the box, so they can be fixed.
    setText(errors.map((e) => e.entry).join(", "));
  };
  return (
    <form
      className="flex flex-col gap-1"
      onSubmit={(e) => {
        e.preventDefault();
        submit();
      }}
      noValidate
    >
      <Label htmlFor="paste-list">Paste a list</Label>
      <textarea
        id="paste-list"
        rows={2}
        className={cn(inputClass, "num resize-y")}
        placeholder="16, 40:2.5, 7=-1"
        value={text}
        aria-invalid={errors.length ? true : undefined}
        aria-describedby="paste-list-help paste-list-errors"
        onChange={(e) => {
          setText(e.target.value);
          setErrors([]);
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit();
        }}
      />
      <p id="paste-list-help" className="text-xs text-muted">
        index, index:strength or index=strength, separated by commas or new lines (strength 1 when left out).
      </p>
      <ul id="paste-list-errors" aria-live="polite" className="flex flex-col gap-0.5">
        {errors.map((e) => (
          <li key={e.entry} className="text-xs text-danger">
            <span className="num font-semibold">{e.entry}</span>: {e.message}
          </li>
        ))}
      </ul>
      <Button type="submit" variant="action" className="self-start" disabled={!text.trim()}>
        Add list
      </Button>
    </form>
  );
}
