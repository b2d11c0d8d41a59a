import { Link } from "@tanstack/react-router";

/** The five tabs, in the mockup's order. Each is a route; the active one gets aria-current="page". */
export const TABS = [
  { to: "/models", label: "Models" },
  { to: "/saes", label: "SAEs" },
  { to: "/steering", label: "Steering" },
  { to: "/profiles", label: "Profiles" },
  { to: "/monitor", label: "Monitor" },
] as const;

export function NavTabs() {
  return (
    <nav aria-label="Main">
      <ul className="flex gap-1">
        {TABS.map((t) => (
          <li key={t.to}>
            <Link
              to={t.to}
              className="block rounded-md px-4 py-2 text-sm font-medium text-label hover:text-body"
              activeProps={{ className: "bg-accent/10 text-accent!", "aria-current": "page" }}
            >
              {t.label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  );
}
