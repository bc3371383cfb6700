import { posix } from "node:path";
import { InvalidParameterError } from "../errors.js";

/** The part of an image's config a container starts from (Docker's names, as in `docker image inspect`). */
export interface ImageConfig {
  Cmd: string[] | null;
  Entrypoint: string[] | null;
  Env: string[] | null;
  WorkingDir: string;
}

const emptyConfig = (): ImageConfig => ({ Cmd: null, Entrypoint: null, Env: null, WorkingDir: "" });

const SUPPORTED = ["CMD", "ENTRYPOINT", "ENV", "WORKDIR"];
/** Instructions Docker accepts in `docker import --change` that ctnet does not apply. */
const UNSUPPORTED = ["EXPOSE", "ONBUILD", "USER", "VOLUME", "LABEL", "STOPSIGNAL", "HEALTHCHECK", "SHELL"];

/**
 * Applies `docker import --change` instructions (Dockerfile syntax, one or more lines each) to an
 * empty config. Docker joins the changes into one Dockerfile, so continuation lines, comments and
 * `$VAR` references to earlier ENVs work the same here.
 */
export function parseChanges(changes: readonly string[]): ImageConfig {
  const config = emptyConfig();
  for (const line of logicalLines(changes.join("\n"))) {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(line) as RegExpExecArray;
    const instruction = (m[1] as string).toUpperCase();
    const args = (m[2] as string).trim();
    if (UNSUPPORTED.includes(instruction))
      throw new InvalidParameterError(
        `${instruction} is not supported by ctnet in image changes (supported: ${SUPPORTED.join(", ")})`,
      );
    if (!SUPPORTED.includes(instruction))
      throw new InvalidParameterError(`${instruction} is not a valid change command`);
    if (!args) throw new InvalidParameterError(`${instruction} requires at least one argument`);
    switch (instruction) {
      case "CMD":
        config.Cmd = command(args);
        break;
      case "ENTRYPOINT":
        config.Entrypoint = command(args);
        break;
      case "ENV":
        for (const [key, value] of envPairs(args, config.Env ?? [])) setEnv(config, key, value);
        break;
      case "WORKDIR":
        config.WorkingDir = posix.resolve(
          "/",
          config.WorkingDir || "/",
          expand(args, config.Env ?? [], false)[0] ?? "",
        );
        break;
    }
  }
  return config;
}

/** Joins `\`-continued lines and drops blank lines and comments. */
function logicalLines(text: string): string[] {
  const out: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!current && (line === "" || line.startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    out.push(current + line);
    current = "";
  }
  if (current.trim()) out.push(current.trim());
  return out;
}

/** The exec form (`["sh", "-c", "x"]`) as given; anything else is the shell form, run by /bin/sh -c. */
function command(args: string): string[] {
  if (args.startsWith("[")) {
    try {
      const parsed: unknown = JSON.parse(args);
      if (Array.isArray(parsed) && parsed.every((a) => typeof a === "string")) return parsed;
    } catch {
      // Docker falls back to the shell form when the JSON does not parse.
    }
  }
  return ["/bin/sh", "-c", args];
}

/** `ENV K=V K2="a b"`, or the legacy `ENV K the rest of the line`. */
function envPairs(args: string, env: readonly string[]): [string, string][] {
  const first = /^\S+/.exec(args)?.[0] ?? "";
  if (!first.includes("=")) {
    const value = args.slice(first.length).trim();
    if (!value) throw new InvalidParameterError(`ENV ${first} needs a value: use ENV ${first}=VALUE`);
    return [[first, expand(value, env, false)[0] ?? ""]];
  }
  const pairs: [string, string][] = [];
  const scope = [...env];
  for (const word of expand(args, env, true, scope)) {
    const eq = word.indexOf("=");
    if (eq <= 0)
      throw new InvalidParameterError(
        `Syntax error - can't find = in "${word}". Must be of the form: name=value`,
      );
    pairs.push([word.slice(0, eq), word.slice(eq + 1)]);
  }
  return pairs;
}

function setEnv(config: ImageConfig, key: string, value: string): void {
  const env = (config.Env ?? []).filter((e) => e.split("=", 1)[0] !== key);
  env.push(`${key}=${value}`);
  config.Env = env;
}

/**
 * Docker's word processing for ENV and WORKDIR: single quotes are literal, double quotes group
 * and expand, a backslash escapes the next character, `$NAME`, `${NAME}`, `${NAME:-default}` and
 * `${NAME:+alternative}` read the environment set so far. With `split`, unquoted whitespace
 * separates words (and `scope` learns each `K=V` word, so `ENV A=1 B=$A` sees A).
 */
function expand(text: string, env: readonly string[], split: boolean, scope?: string[]): string[] {
  const lookup = (name: string) => {
    const all = scope ?? env;
    for (let i = all.length - 1; i >= 0; i--) {
      const e = all[i] as string;
      if (e.startsWith(`${name}=`)) return e.slice(name.length + 1);
    }
    return undefined;
  };
  const words: string[] = [];
  let word = "";
  let inWord = false;
  const endWord = () => {
    if (!inWord) return;
    words.push(word);
    scope?.push(word);
    word = "";
    inWord = false;
  };
  let i = 0;
  const variable = (): string => {
    const braced = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}/.exec(text.slice(i));
    if (braced) {
      i += braced[0].length;
      const value = lookup(braced[1] as string);
      if (braced[2] === "-") return value ? value : (braced[3] ?? "");
      if (braced[2] === "+") return value ? (braced[3] ?? "") : "";
      return value ?? "";
    }
    const plain = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(text.slice(i));
    if (plain) {
      i += plain[0].length;
      return lookup(plain[1] as string) ?? "";
    }
    i++;
    return "$";
  };
  while (i < text.length) {
    const c = text[i] as string;
    if (split && /\s/.test(c)) {
      endWord();
      i++;
      continue;
    }
    inWord = true;
    if (c === "\\" && i + 1 < text.length) {
      word += text[i + 1];
      i += 2;
    } else if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0)
        throw new InvalidParameterError(`unexpected end of statement while looking for matching ': ${text}`);
      word += text.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      while (i < text.length && text[i] !== '"') {
        if (text[i] === "\\" && (text[i + 1] === '"' || text[i + 1] === "\\" || text[i + 1] === "$")) {
          word += text[i + 1];
          i += 2;
        } else if (text[i] === "$") {
          word += variable();
        } else {
          word += text[i];
          i++;
        }
      }
      if (i >= text.length)
        throw new InvalidParameterError(`unexpected end of statement while looking for matching ": ${text}`);
      i++;
    } else if (c === "$") {
      word += variable();
    } else {
      word += c;
      i++;
    }
  }
  endWord();
  return words;
}
