import { useId } from "react";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";

/**
 * The required Hub repository field of the download forms: a monospace input with its label and the
 * inline validation message (`error`, shown once the caller has decided the field was touched).
 */
export function RepoIdField({
  label,
  value,
  onChange,
  onBlur,
  placeholder,
  error,
}: {
  label: string;
  value: string;
  onChange: (value: string) => void;
  onBlur: () => void;
  placeholder: string;
  error: string | null;
}) {
  const inputId = useId();
  const errId = useId();
  return (
    <div>
      <Label htmlFor={inputId}>
        {label}{" "}
        <span className="text-danger" aria-hidden="true">
          *
        </span>
      </Label>
      <Input
        id={inputId}
        value={value}
        onChange={(e) => onChange(e.target.value)}
        onBlur={onBlur}
        placeholder={placeholder}
        aria-invalid={error ? true : undefined}
        aria-describedby={error ? errId : undefined}
        aria-required="true"
        autoComplete="off"
        spellCheck={false}
        className="num"
      />
      {error && (
        <p id={errId} className="mt-1.5 text-xs text-danger">
          {error}
        </p>
      )}
    </div>
  );
}
