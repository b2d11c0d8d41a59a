import { Link } from "@tanstack/react-router";
import { LayersIcon } from "lucide-react";
import { useId, useState } from "react";
import type { StatusOut } from "@/client";
import { Button, buttonVariants } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";

/** Shown while no SAE is attached: attach one by name, Hub reference or server folder. */
export function AttachBySourceCard({
  status,
  onAttach,
}: {
  status: StatusOut;
  onAttach: (source: string) => void;
}) {
  const [source, setSource] = useState("");
  const id = useId();
  return (
    <Card title="No SAE attached" icon={<LayersIcon />}>
      {!status.model ? (
        <div className="flex flex-wrap items-center gap-3 text-sm text-label">
          An SAE attaches to a layer of the loaded model: load a model first.
          <Link to="/models" className={buttonVariants({ variant: "action" })}>
            Go to Models
          </Link>
        </div>
      ) : (
        <form
          className="grid gap-4 md:grid-cols-[1fr_auto] md:items-end"
          onSubmit={(e) => {
            e.preventDefault();
            if (source.trim()) onAttach(source.trim());
          }}
        >
          <div>
            <Label htmlFor={id}>
              Attach by name, Hub reference (owner/repo:folder) or a folder on the server
            </Label>
            <Input
              id={id}
              value={source}
              onChange={(e) => setSource(e.target.value)}
              placeholder="e.g. millm-demo-sae (the bundled demo)"
              className="num"
              autoComplete="off"
              spellCheck={false}
            />
          </div>
          <Button type="submit" disabled={!source.trim()}>
            Choose layer…
          </Button>
        </form>
      )}
    </Card>
  );
}
