/**
 * A subset of Go's text/template, over JSON data, so that the `--format`/`-f` strings people already
 * use with docker work unchanged: field paths, variables, pipelines, `if`/`with`/`range` (with
 * `else`), whitespace trimming, and the functions docker scripts rely on (`json`, `index`, `join`,
 * `println`, comparisons, …). Values print the way Go's fmt prints decoded JSON: objects as
 * `map[k:v]`, arrays as `[a b]`, null as `<nil>`, missing keys as `<no value>`.
 */

export class TemplateError extends Error {
  constructor(message: string) {
    super(`template: ${message}`);
    this.name = "TemplateError";
  }
}

/** A key that is not there, as distinct from one whose value is null; Go prints it `<no value>`. */
const MISSING: unique symbol = Symbol("no value");
type Value = unknown;

type Token =
  | { t: "field"; path: string[]; adj: boolean }
  | { t: "var"; name: string; path: string[] }
  | { t: "lit"; v: Value }
  | { t: "ident"; v: string }
  | { t: "(" | ")" | "|" | "," | ":=" | "=" };

type Arg =
  | { k: "field"; path: string[] }
  | { k: "var"; name: string; path: string[] }
  | { k: "lit"; v: Value }
  | { k: "fn"; name: string }
  | { k: "sub"; pipe: Pipe; path: string[] };

interface Pipe {
  decl?: { names: string[]; assign: boolean };
  cmds: Arg[][];
}

type TNode =
  | { k: "text"; s: string }
  | { k: "out"; pipe: Pipe }
  | { k: "if" | "with"; pipe: Pipe; body: TNode[]; alt: TNode[] }
  | { k: "range"; pipe: Pipe; body: TNode[]; alt: TNode[] };

type Segment = { kind: "text"; s: string } | { kind: "action"; src: string };

function splitSegments(src: string): Segment[] {
  const out: Segment[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf("{{", i);
    let text = src.slice(i, open === -1 ? src.length : open);
    if (trimNext) text = text.replace(/^\s+/, "");
    if (open === -1) {
      if (text) out.push({ kind: "text", s: text });
      break;
    }
    let start = open + 2;
    if (/^-\s/.test(src.slice(start, start + 2))) {
      text = text.replace(/\s+$/, "");
      start += 1;
    }
    if (text) out.push({ kind: "text", s: text });
    const close = findClose(src, start);
    let end = close;
    trimNext = false;
    if (/\s-$/.test(src.slice(start, close))) {
      end = close - 1;
      trimNext = true;
    }
    out.push({ kind: "action", src: src.slice(start, end) });
    i = close + 2;
  }
  return out;
}

/** Finds the `}}` that closes an action, skipping any inside string literals. */
function findClose(src: string, from: number): number {
  let i = from;
  while (i < src.length) {
    const c = src[i];
    if (src.startsWith("/*", i)) {
      const e = src.indexOf("*/", i + 2);
      if (e === -1) throw new TemplateError("unclosed comment");
      i = e + 2;
    } else if (c === '"' || c === "`") {
      i++;
      while (i < src.length && src[i] !== c) i += c === '"' && src[i] === "\\" ? 2 : 1;
      if (i >= src.length) throw new TemplateError("unterminated quoted string");
      i++;
    } else if (src.startsWith("}}", i)) {
      return i;
    } else {
      i++;
    }
  }
  throw new TemplateError("unclosed action");
}

const WORDS: Record<string, Token> = {
  true: { t: "lit", v: true },
  false: { t: "lit", v: false },
  nil: { t: "lit", v: null },
};

/** Each token kind: its pattern (anchored at the current position) and how it becomes a token. */
const TOKEN_RULES: [RegExp, (m: RegExpExecArray, adj: boolean) => Token][] = [
  [/^"(?:[^"\\]|\\.)*"/, (m) => ({ t: "lit", v: JSON.parse(m[0]) as string })],
  [/^`[^`]*`/, (m) => ({ t: "lit", v: m[0].slice(1, -1) })],
  [/^(?:\.[A-Za-z_]\w*)+/, (m, adj) => ({ t: "field", path: m[0].slice(1).split("."), adj })],
  [/^\.(?![\w.])/, (_m, adj) => ({ t: "field", path: [], adj })],
  [
    /^\$(\w*)((?:\.[A-Za-z_]\w*)*)/,
    (m) => ({ t: "var", name: m[1], path: m[2] ? m[2].slice(1).split(".") : [] }),
  ],
  [/^[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?/, (m) => ({ t: "lit", v: Number(m[0]) })],
  [/^[A-Za-z_]\w*/, (m) => WORDS[m[0]] ?? { t: "ident", v: m[0] }],
  [/^(?::=|[()|,=])/, (m) => ({ t: m[0] as ":=" | "(" | ")" | "|" | "," | "=" })],
];

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    if (/\s/.test(src[i])) {
      i++;
      continue;
    }
    const rest = src.slice(i);
    // Adjacency tells `(pipe).Field` (a field of the result) from `(pipe) .Field` (two operands).
    const adj = i > 0 && !/\s/.test(src[i - 1]);
    let matched = false;
    for (const [re, make] of TOKEN_RULES) {
      const m = re.exec(rest);
      if (!m) continue;
      out.push(make(m, adj));
      i += m[0].length;
      matched = true;
      break;
    }
    if (!matched) throw new TemplateError(`unexpected ${JSON.stringify(rest[0])} in action`);
  }
  return out;
}

class PipeParser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  parse(allowTwoVars: boolean): Pipe {
    const pipe: Pipe = { decl: this.decl(allowTwoVars), cmds: [] };
    pipe.cmds = this.commands();
    if (this.pos < this.tokens.length)
      throw new TemplateError(`unexpected ${this.tokens[this.pos].t} in operand`);
    return pipe;
  }

  private decl(allowTwoVars: boolean): Pipe["decl"] {
    const t = this.tokens;
    const at = (i: number) => t[this.pos + i]?.t;
    if (at(0) === "var" && (at(1) === ":=" || at(1) === "=")) {
      const name = (t[this.pos] as { name: string }).name;
      this.pos += 2;
      return { names: [name], assign: at(-1) === "=" };
    }
    if (allowTwoVars && at(0) === "var" && at(1) === "," && at(2) === "var" && at(3) === ":=") {
      const names = [(t[this.pos] as { name: string }).name, (t[this.pos + 2] as { name: string }).name];
      this.pos += 4;
      return { names, assign: false };
    }
    return undefined;
  }

  private commands(): Arg[][] {
    const cmds: Arg[][] = [];
    for (;;) {
      const cmd: Arg[] = [];
      while (
        this.pos < this.tokens.length &&
        this.tokens[this.pos].t !== "|" &&
        this.tokens[this.pos].t !== ")"
      ) {
        cmd.push(this.arg());
      }
      if (cmd.length === 0) throw new TemplateError("missing value for command");
      cmds.push(cmd);
      if (this.tokens[this.pos]?.t !== "|") return cmds;
      this.pos++;
    }
  }

  private arg(): Arg {
    const tok = this.tokens[this.pos++];
    switch (tok.t) {
      case "field":
        return { k: "field", path: tok.path };
      case "var":
        return { k: "var", name: tok.name, path: tok.path };
      case "lit":
        return { k: "lit", v: tok.v };
      case "ident":
        if (!(tok.v in FUNCS)) throw new TemplateError(`function "${tok.v}" not defined`);
        return { k: "fn", name: tok.v };
      case "(": {
        const pipe: Pipe = { cmds: this.commands() };
        if (this.tokens[this.pos++]?.t !== ")") throw new TemplateError("unclosed left paren");
        const next = this.tokens[this.pos];
        let path: string[] = [];
        if (next?.t === "field" && next.adj) {
          path = next.path;
          this.pos++;
        }
        return { k: "sub", pipe, path };
      }
      default:
        throw new TemplateError(`unexpected "${tok.t}" in operand`);
    }
  }
}

class TreeParser {
  private pos = 0;
  constructor(private readonly segments: Segment[]) {}

  parse(): TNode[] {
    const { nodes, term } = this.list();
    if (term) throw new TemplateError(`unexpected {{${term.word}}}`);
    return nodes;
  }

  /** Parses up to the `{{end}}` or `{{else …}}` closing the current block, returning which one. */
  private list(): { nodes: TNode[]; term?: { word: "end" | "else"; rest: Token[] } } {
    const nodes: TNode[] = [];
    while (this.pos < this.segments.length) {
      const seg = this.segments[this.pos++];
      if (seg.kind === "text") {
        nodes.push({ k: "text", s: seg.s });
        continue;
      }
      if (/^\s*\/\*[\s\S]*\*\/\s*$/.test(seg.src)) continue;
      const tokens = tokenize(seg.src);
      const head = tokens[0];
      const word = head?.t === "ident" ? head.v : undefined;
      if (word === "end" || word === "else") return { nodes, term: { word, rest: tokens.slice(1) } };
      if (word === "if" || word === "with" || word === "range") {
        nodes.push(this.block(word, tokens.slice(1)));
      } else if (word === "define" || word === "template" || word === "block") {
        throw new TemplateError(`{{${word}}} is not supported`);
      } else {
        if (tokens.length === 0) throw new TemplateError("missing value for command");
        nodes.push({ k: "out", pipe: new PipeParser(tokens).parse(false) });
      }
    }
    return { nodes };
  }

  private block(word: "if" | "with" | "range", tokens: Token[]): TNode {
    if (tokens.length === 0) throw new TemplateError(`missing value for ${word}`);
    const pipe = new PipeParser(tokens).parse(word === "range");
    const body = this.list();
    if (!body.term) throw new TemplateError(`unexpected EOF: {{${word}}} without {{end}}`);
    let alt: TNode[] = [];
    if (body.term.word === "else") {
      const rest = body.term.rest;
      const chained =
        rest[0]?.t === "ident" && (rest[0].v === "if" || rest[0].v === "with") ? rest[0].v : undefined;
      if (chained && word !== "range") {
        // `{{else if}}` nests a block that shares the outer block's `{{end}}`.
        alt = [this.block(chained as "if" | "with", rest.slice(1))];
      } else {
        if (rest.length > 0) throw new TemplateError("unexpected tokens after {{else}}");
        const tail = this.list();
        if (tail.term?.word !== "end") throw new TemplateError(`expected {{end}} to close {{${word}}}`);
        alt = tail.nodes;
      }
    } else if (body.term.rest.length > 0) {
      throw new TemplateError("unexpected tokens after {{end}}");
    }
    return { k: word, pipe, body: body.nodes, alt };
  }
}

interface Scope {
  dot: Value;
  vars: { name: string; value: Value }[];
}

function isObject(v: Value): v is Record<string, Value> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function field(v: Value, path: string[]): Value {
  let cur = v;
  for (const key of path) {
    if (cur === MISSING || cur === null || cur === undefined) return MISSING;
    if (!isObject(cur)) throw new TemplateError(`can't evaluate field ${key} in type ${goType(cur)}`);
    cur = Object.hasOwn(cur, key) ? cur[key] : MISSING;
  }
  return cur;
}

function goType(v: Value): string {
  if (Array.isArray(v)) return "[]interface {}";
  if (typeof v === "number") return "float64";
  if (typeof v === "boolean") return "bool";
  return typeof v;
}

/** Go's notion of truth: false, 0, nil and empty strings, arrays and maps are false. */
export function truthy(v: Value): boolean {
  if (v === MISSING || v === null || v === undefined) return false;
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "string" || Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return true;
}

/** Formats a value as Go's `%v` formats decoded JSON. */
export function formatValue(v: Value): string {
  if (v === MISSING || v === undefined) return "<no value>";
  return formatInner(v);
}

function formatInner(v: Value): string {
  if (v === null || v === MISSING || v === undefined) return "<nil>";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(formatInner).join(" ")}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).sort();
    return `map[${keys.map((k) => `${k}:${formatInner(v[k])}`).join(" ")}]`;
  }
  return String(v);
}

function toJSON(v: Value): string {
  return JSON.stringify(v === MISSING ? null : v) ?? "null";
}

function equal(a: Value, b: Value): boolean {
  if (a === MISSING) a = null;
  if (b === MISSING) b = null;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return a === b;
  return JSON.stringify(a) === JSON.stringify(b);
}

function compare(a: Value, b: Value): number {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "string" && typeof b === "string") return a < b ? -1 : a > b ? 1 : 0;
  throw new TemplateError(`incompatible types for comparison`);
}

function length(v: Value): number {
  if (typeof v === "string" || Array.isArray(v)) return v.length;
  if (isObject(v)) return Object.keys(v).length;
  throw new TemplateError(`len of type ${goType(v)}`);
}

/** Go's fmt.Sprint: a space between operands only when neither side is a string. */
function sprint(args: Value[]): string {
  let out = "";
  args.forEach((a, i) => {
    if (i > 0 && typeof a !== "string" && typeof args[i - 1] !== "string") out += " ";
    out += formatValue(a);
  });
  return out;
}

function sprintf(format: Value, args: Value[]): string {
  let n = 0;
  return String(format).replace(
    /%([-+ #0]*\d*(?:\.\d+)?)([%vsdqtfx])/g,
    (_all, _flags: string, verb: string) => {
      if (verb === "%") return "%";
      if (n >= args.length) return `%!${verb}(MISSING)`;
      const a = args[n++];
      switch (verb) {
        case "q":
          return JSON.stringify(typeof a === "string" ? a : formatValue(a));
        case "d":
          return typeof a === "number" ? String(Math.trunc(a)) : `%!d(${formatValue(a)})`;
        case "f":
          return typeof a === "number" ? a.toFixed(6) : `%!f(${formatValue(a)})`;
        case "x":
          return typeof a === "number" ? a.toString(16) : Buffer.from(String(a)).toString("hex");
        default:
          return formatValue(a);
      }
    },
  );
}

function index(v: Value, ...keys: Value[]): Value {
  let cur = v;
  for (const key of keys) {
    if (cur === MISSING || cur === null) return MISSING;
    if (Array.isArray(cur)) {
      if (typeof key !== "number" || key < 0 || key >= cur.length) {
        throw new TemplateError(`index out of range: ${formatValue(key)}`);
      }
      cur = cur[key];
    } else if (isObject(cur)) {
      const k = String(key);
      cur = Object.hasOwn(cur, k) ? cur[k] : MISSING;
    } else {
      throw new TemplateError(`can't index item of type ${goType(cur)}`);
    }
  }
  return cur;
}

const FUNCS: Record<string, (...args: Value[]) => Value> = {
  json: (v) => toJSON(v),
  index: (v, ...keys) => index(v, ...keys),
  len: (v) => length(v),
  print: (...a) => sprint(a),
  println: (...a) => `${a.map(formatValue).join(" ")}\n`,
  printf: (f, ...a) => sprintf(f, a),
  not: (v) => !truthy(v),
  and: (...a) => a.find((v) => !truthy(v)) ?? a[a.length - 1],
  or: (...a) => a.find((v) => truthy(v)) ?? a[a.length - 1],
  eq: (a, ...b) => b.some((x) => equal(a, x)),
  ne: (a, b) => !equal(a, b),
  lt: (a, b) => compare(a, b) < 0,
  le: (a, b) => compare(a, b) <= 0,
  gt: (a, b) => compare(a, b) > 0,
  ge: (a, b) => compare(a, b) >= 0,
  join: (list, sep) => (Array.isArray(list) ? list.map(formatValue).join(String(sep)) : formatValue(list)),
  split: (s, sep) => String(s).split(String(sep)),
  upper: (s) => String(s).toUpperCase(),
  lower: (s) => String(s).toLowerCase(),
  title: (s) => String(s).replace(/\b\w/g, (c) => c.toUpperCase()),
  truncate: (s, n) => String(s).slice(0, Number(n)),
};

function lookupVar(scope: Scope, name: string): Value {
  for (let i = scope.vars.length - 1; i >= 0; i--)
    if (scope.vars[i].name === name) return scope.vars[i].value;
  throw new TemplateError(`undefined variable: $${name}`);
}

function evalArg(arg: Arg, scope: Scope): Value {
  switch (arg.k) {
    case "field":
      return field(scope.dot, arg.path);
    case "var":
      return field(lookupVar(scope, arg.name), arg.path);
    case "lit":
      return arg.v;
    case "sub":
      return field(evalPipe(arg.pipe, scope), arg.path);
    case "fn":
      return FUNCS[arg.name]();
  }
}

function evalPipe(pipe: Pipe, scope: Scope): Value {
  let result: Value = MISSING;
  pipe.cmds.forEach((cmd, i) => {
    const [head, ...rest] = cmd;
    const piped = i > 0 ? [result] : [];
    if (head.k === "fn") {
      result = FUNCS[head.name](...rest.map((a) => evalArg(a, scope)), ...piped);
    } else {
      if (rest.length > 0 || piped.length > 0) throw new TemplateError("can't give argument to non-function");
      result = evalArg(head, scope);
    }
  });
  if (pipe.decl) {
    const [name] = pipe.decl.names;
    if (pipe.decl.assign) {
      const slot = [...scope.vars].reverse().find((v) => v.name === name);
      if (!slot) throw new TemplateError(`undefined variable: $${name}`);
      slot.value = result;
    } else {
      scope.vars.push({ name, value: result });
    }
  }
  return result;
}

function run(nodes: TNode[], scope: Scope, out: string[]): void {
  for (const node of nodes) {
    switch (node.k) {
      case "text":
        out.push(node.s);
        break;
      case "out": {
        const v = evalPipe(node.pipe, scope);
        if (!node.pipe.decl) out.push(formatValue(v));
        break;
      }
      case "if":
      case "with": {
        const mark = scope.vars.length;
        const v = evalPipe(node.pipe, scope);
        if (truthy(v)) run(node.body, node.k === "with" ? { dot: v, vars: scope.vars } : scope, out);
        else run(node.alt, scope, out);
        scope.vars.length = mark;
        break;
      }
      case "range":
        runRange(node, scope, out);
        break;
    }
  }
}

function runRange(node: Extract<TNode, { k: "range" }>, scope: Scope, out: string[]): void {
  const mark = scope.vars.length;
  const names = node.pipe.decl?.names ?? [];
  const v = evalPipe({ cmds: node.pipe.cmds }, scope);
  let entries: [Value, Value][];
  if (Array.isArray(v)) entries = v.map((x, i) => [i, x]);
  else if (isObject(v))
    entries = Object.keys(v)
      .sort()
      .map((k) => [k, v[k]]);
  else if (v === MISSING || v === null) entries = [];
  else if (typeof v === "number") entries = Array.from({ length: Math.max(0, v) }, (_, i) => [i, i]);
  else throw new TemplateError(`range can't iterate over ${formatValue(v)}`);
  if (entries.length === 0) {
    run(node.alt, scope, out);
  }
  for (const [key, value] of entries) {
    const vars = scope.vars.slice(0, mark);
    if (names.length === 1) vars.push({ name: names[0], value });
    if (names.length === 2) vars.push({ name: names[0], value: key }, { name: names[1], value });
    run(node.body, { dot: value, vars }, out);
  }
  scope.vars.length = mark;
}

export interface Template {
  execute(data: unknown): string;
}

/** Parses once so a format applied to many items (one per table row) is checked up front. */
export function parseTemplate(src: string): Template {
  const nodes = new TreeParser(splitSegments(src)).parse();
  return {
    execute(data: unknown): string {
      const out: string[] = [];
      run(nodes, { dot: data, vars: [{ name: "", value: data }] }, out);
      return out.join("");
    },
  };
}

export function renderTemplate(src: string, data: unknown): string {
  return parseTemplate(src).execute(data);
}
