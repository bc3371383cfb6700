import { InvalidParameterError } from "../errors.js";

const TRUE = new Set(["1", "t", "T", "true", "TRUE", "True"]);
const FALSE = new Set(["0", "f", "F", "false", "FALSE", "False"]);

/** Parses a boolean driver option the way Docker does (Go's strconv.ParseBool). */
export function parseBoolOption(key: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === "") return fallback;
  if (TRUE.has(value)) return true;
  if (FALSE.has(value)) return false;
  throw new InvalidParameterError(`invalid value for option ${key}: "${value}" is not a boolean`);
}

export function parseMtuOption(key: string, value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  const mtu = Number(value);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new InvalidParameterError(
      `invalid value for option ${key}: MTU must be an integer between 68 and 65535, got "${value}"`,
    );
  }
  return mtu;
}

/** Rejects options the driver does not know, naming them, so that a typo never goes unnoticed. */
export function rejectUnknownOptions(
  driver: string,
  options: Record<string, string>,
  known: readonly string[],
): void {
  const unknown = Object.keys(options).filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    throw new InvalidParameterError(
      `unknown option${unknown.length > 1 ? "s" : ""} for the ${driver} driver: ${unknown.join(", ")} (known: ${known.join(", ")})`,
    );
  }
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function validateIfname(key: string, name: string): void {
  if (!IFNAME.test(name) || name === "." || name === "..") {
    throw new InvalidParameterError(
      `invalid value for option ${key}: "${name}" is not a valid interface name (1-15 characters of letters, digits, '_', '.', '-')`,
    );
  }
}
