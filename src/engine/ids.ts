import { randomBytes } from "node:crypto";
import { InvalidParameterError } from "../errors.js";

/** 64 hex digits, as Docker's object ids. */
export const newId = () => randomBytes(32).toString("hex");

export const shortId = (id: string) => id.slice(0, 12);

/**
 * Finds an object the way Docker does: exact id, then exact name, then a unique id prefix.
 * Returns undefined when nothing matches; an ambiguous prefix is an error.
 */
export function lookup<T extends { id: string; name: string }>(
  items: Iterable<T>,
  ref: string,
  kind: string,
): T | undefined {
  const all = [...items];
  const name = ref.startsWith("/") ? ref.slice(1) : ref;
  const exact = all.find((x) => x.id === ref) ?? all.find((x) => x.name === name);
  if (exact) return exact;
  if (!/^[0-9a-f]+$/.test(ref)) return undefined;
  const byPrefix = all.filter((x) => x.id.startsWith(ref));
  if (byPrefix.length > 1)
    throw new InvalidParameterError(`${kind} ${ref} is ambiguous (${byPrefix.length} matches found)`);
  return byPrefix[0];
}
