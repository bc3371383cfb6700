import { InvalidParameterError } from "../errors.js";

/** Docker's `filters` query parameter: JSON of {key: {value: true}} or the older {key: [value]}. */
export type Filters = Map<string, string[]>;

export function parseFilters(raw: string | null, allowed: readonly string[]): Filters {
  const out: Filters = new Map();
  if (!raw) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new InvalidParameterError(`invalid filters: ${raw}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new InvalidParameterError(`invalid filters: ${raw}`);
  for (const [key, value] of Object.entries(parsed)) {
    if (!allowed.includes(key)) throw new InvalidParameterError(`invalid filter '${key}'`);
    const values = Array.isArray(value)
      ? value.map(String)
      : Object.keys(value as object).filter((k) => (value as Record<string, unknown>)[k]);
    out.set(key, values);
  }
  return out;
}

/** Docker matches names as regular expressions (so a plain word matches as a substring). */
export function matchesPattern(pattern: string, value: string): boolean {
  if (pattern === value) return true;
  try {
    return new RegExp(pattern).test(value);
  } catch {
    return false;
  }
}

export function matchesLabels(wanted: string[], labels: Record<string, string>): boolean {
  return wanted.every((w) => {
    const eq = w.indexOf("=");
    if (eq < 0) return w in labels;
    return labels[w.slice(0, eq)] === w.slice(eq + 1);
  });
}

/** Every filter key must match one of its values (Docker's OR within a key, AND across keys). */
export function applyFilters<T>(
  items: T[],
  filters: Filters,
  tests: Record<string, (item: T, value: string) => boolean>,
): T[] {
  return items.filter((item) =>
    [...filters].every(([key, values]) => {
      if (key === "label") return tests.label ? values.every((v) => tests.label?.(item, v)) : true;
      const test = tests[key];
      return !test || values.length === 0 || values.some((v) => test(item, v));
    }),
  );
}
