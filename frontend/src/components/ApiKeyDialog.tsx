import { useQueryClient } from "@tanstack/react-query";
import { KeyRoundIcon } from "lucide-react";
import { useEffect, useId, useRef, useState } from "react";
import { Button } from "@/components/ui/button";
import {
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
} from "@/components/ui/dialog";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { getApiKey, onApiKeyNeeded, setApiKey } from "@/lib/auth";

/** After Cancel, polls that still get 401s do not reopen the dialog for this long (the status bar offers it). */
const QUIET_MS = 60_000;

/** Opens when the server answers 401 (a key is set with MILLM_API_KEY); stores the key and retries. */
export function ApiKeyDialog() {
  const [open, setOpen] = useState(false);
  const [value, setValue] = useState("");
  const [hadKey, setHadKey] = useState(false);
  const qc = useQueryClient();
  const id = useId();
  const dismissedAt = useRef(0);

  useEffect(
    () =>
      onApiKeyNeeded((explicit) => {
        if (!explicit && Date.now() - dismissedAt.current < QUIET_MS) return;
        setHadKey(getApiKey() != null);
        setOpen(true);
      }),
    [],
  );
  const close = () => {
    dismissedAt.current = Date.now();
    setOpen(false);
  };

  const save = (e: React.FormEvent) => {
    e.preventDefault();
    const key = value.trim();
    if (!key) return;
    setApiKey(key);
    setValue("");
    setOpen(false);
    void qc.invalidateQueries();
  };

  return (
    <Dialog open={open} onOpenChange={(o) => (o ? setOpen(true) : close())}>
      <DialogContent>
        <form onSubmit={save}>
          <DialogHeader>
            <DialogTitle className="flex items-center gap-2">
              <KeyRoundIcon className="size-5 text-accent" aria-hidden="true" /> API key required
            </DialogTitle>
            <DialogDescription>
              {hadKey
                ? "The server refused the stored key. Enter the current one."
                : "This server requires an API key (MILLM_API_KEY). It is kept in this browser only."}
            </DialogDescription>
          </DialogHeader>
          <Label htmlFor={id}>API key</Label>
          <Input
            id={id}
            type="password"
            autoComplete="current-password"
            value={value}
            onChange={(e) => setValue(e.target.value)}
            required
            autoFocus
          />
          <DialogFooter>
            <Button variant="secondary" onClick={close}>
              Cancel
            </Button>
            <Button type="submit" disabled={!value.trim()}>
              Save key
            </Button>
          </DialogFooter>
        </form>
      </DialogContent>
    </Dialog>
  );
}
