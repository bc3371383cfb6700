/**
 * Docker-compatible output: aligned tables, `--format` handling (`table …`, `json`, or a raw
 * template), and the small humanisations docker applies (truncated IDs, "2 minutes ago", ports).
 * Everything here is pure so that output can be tested byte for byte.
 */
import type { ContainerSummary, ImageSummary, Network, PortSummary } from "../client/client.js";
import { UsageError } from "./errors.js";
import { parseTemplate } from "./template.js";

/**
 * Aligns tab-separated cells the way docker's tabwriter does (min width 10, padding 3): every
 * cell but the last of a line is padded, so lines carry no trailing spaces.
 */
export function alignTable(lines: string[]): string {
  const rows = lines.map((l) => l.split("\t"));
  const widths: number[] = [];
  for (const row of rows) {
    row.slice(0, -1).forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 10, cell.length + 3);
    });
  }
  return rows
    .map((row) => row.map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i]) : cell)).join(""))
    .join("\n");
}

/** Docker accepts `\t` and `\n` typed literally in a shell-quoted format string. */
function unescapeFormat(format: string): string {
  return format.replace(/\\t/g, "\t").replace(/\\n/g, "\n");
}

/**
 * Renders list items for `ls`/`ps`: the default table, `table TEMPLATE` (headers from `headers`),
 * `json` (one object per line), or a bare template applied to each item, one line each.
 */
export function formatList(
  items: Record<string, string>[],
  format: string | undefined,
  defaultTable: string,
  headers: Record<string, string>,
): string {
  let fmt = format?.trim() ? format : "table";
  if (fmt === "json") fmt = "{{json .}}";
  if (fmt === "table") fmt = defaultTable;
  const isTable = fmt.startsWith("table");
  const tmpl = parseTemplate(unescapeFormat(isTable ? fmt.slice("table".length).trimStart() : fmt));
  const lines = items.map((item) => tmpl.execute(item));
  if (!isTable) return lines.map((l) => `${l}\n`).join("");
  return `${alignTable([tmpl.execute(headers), ...lines])}\n`;
}

/** Docker's stringid.TruncateID: the first 12 hex digits, without an algorithm prefix. */
export function shortId(id: string): string {
  const hex = id.includes(":") ? id.slice(id.indexOf(":") + 1) : id;
  return hex.slice(0, 12);
}

/** Docker's units.HumanDuration, so CREATED reads the same as docker's ("About a minute"). */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return "Less than a second";
  if (seconds === 1) return "1 second";
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.round(seconds / 60);
  if (minutes === 1) return "About a minute";
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(seconds / 3600);
  if (hours === 1) return "About an hour";
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(hours / 24 / 365)} years`;
}

/** Docker's Ellipsis: long strings end in "…" so they still fit `maxLength` characters. */
export function ellipsis(s: string, maxLength: number): string {
  const chars = [...s];
  if (chars.length <= maxLength) return s;
  return `${chars.slice(0, maxLength - 1).join("")}…`;
}

/** Go's net.JoinHostPort: IPv6 addresses in brackets. */
function joinHostPort(host: string, port: string | number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function goStringLess(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * docker ps's PORTS column (docker/cli's DisplayablePorts, as docker 28 prints it): unpublished
 * ports and ports published on the same number are grouped into ranges (`53-54/udp`,
 * `0.0.0.0:8001-8002->8001-8002/tcp`) and come first; other mappings follow one by one, with IPv6
 * host addresses in brackets (`[::]:8000->80/tcp`). Go string order, so 0.0.0.0 sorts before ::.
 */
export function formatPorts(ports: PortSummary[] | undefined): string {
  const sorted = [...(ports ?? [])].sort(
    (a, b) =>
      a.PrivatePort - b.PrivatePort ||
      goStringLess(a.IP ?? "", b.IP ?? "") ||
      (a.PublicPort ?? 0) - (b.PublicPort ?? 0) ||
      goStringLess(a.Type, b.Type),
  );
  const groups = new Map<string, { first: number; last: number }>();
  const result: string[] = [];
  const mappings: string[] = [];
  // docker splits the key at "/", so a group on "::" prints as ":::80->80/tcp"; kept as docker has it.
  const formGroup = (key: string, g: { first: number; last: number }) => {
    const slash = key.lastIndexOf("/");
    const ip = slash === -1 ? "" : key.slice(0, slash);
    const type = key.slice(slash + 1);
    let group = g.first === g.last ? String(g.first) : `${g.first}-${g.last}`;
    if (ip !== "") group = `${ip}:${group}->${group}`;
    return `${group}/${type}`;
  };
  for (const p of sorted) {
    let key = p.Type;
    if (p.IP) {
      if (p.PublicPort !== p.PrivatePort) {
        mappings.push(`${joinHostPort(p.IP, p.PublicPort ?? 0)}->${p.PrivatePort}/${p.Type}`);
        continue;
      }
      key = `${p.IP}/${p.Type}`;
    }
    const g = groups.get(key);
    if (g && p.PrivatePort === g.last + 1) {
      g.last = p.PrivatePort;
      continue;
    }
    if (g) {
      result.push(formGroup(key, g));
      // Go's map keeps the key's first insertion slot, so the group is replaced in place.
      g.first = p.PrivatePort;
      g.last = p.PrivatePort;
      continue;
    }
    groups.set(key, { first: p.PrivatePort, last: p.PrivatePort });
  }
  for (const [key, g] of groups) result.push(formGroup(key, g));
  return [...result, ...mappings].join(", ");
}

/** sortorder.NaturalLess as docker uses it: digit runs compare as numbers, the rest as bytes. */
export function naturalCompare(a: string, b: string): number {
  const chunks = (s: string) => s.match(/\d+|\D+/g) ?? [];
  const ca = chunks(a);
  const cb = chunks(b);
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
    const x = ca[i] as string;
    const y = cb[i] as string;
    if (x === y) continue;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
      return x.length - y.length;
    }
    return goStringLess(x, y);
  }
  return ca.length - cb.length;
}

/**
 * `docker port` output from NetworkSettings.Ports: every mapping as `80/tcp -> 0.0.0.0:8000`, or,
 * for one PRIVATE_PORT[/PROTO], just its host addresses; naturally sorted, one per line.
 */
export function portLines(
  ports: Record<string, { HostIp?: string; HostPort?: string }[] | null> | undefined,
  container: string,
  privatePort?: string,
): string[] {
  const out: string[] = [];
  if (privatePort !== undefined) {
    const slash = privatePort.indexOf("/");
    const port = slash === -1 ? privatePort : privatePort.slice(0, slash);
    const proto = slash === -1 || slash === privatePort.length - 1 ? "tcp" : privatePort.slice(slash + 1);
    if (!/^\d+$/.test(port) || Number(port) > 65535) throw new UsageError(`Error: invalid port (${port})`);
    const frontends = ports?.[`${port}/${proto}`];
    if (!frontends) {
      throw new UsageError(`Error: No public port '${privatePort}' published for ${container}`);
    }
    for (const f of frontends) out.push(joinHostPort(f.HostIp ?? "", f.HostPort ?? ""));
  } else {
    for (const [from, frontends] of Object.entries(ports ?? {})) {
      for (const f of frontends ?? [])
        out.push(`${from} -> ${joinHostPort(f.HostIp ?? "", f.HostPort ?? "")}`);
    }
  }
  return out.sort(naturalCompare);
}

/** Go's time.Time String() form, which docker's CreatedAt fields print. */
export function goTime(date: Date): string {
  if (Number.isNaN(date.getTime())) return "";
  const iso = date.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)} +0000 UTC`;
}

function labelsString(labels: Record<string, string> | undefined): string {
  return Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export const NETWORK_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
export const NETWORK_HEADERS: Record<string, string> = {
  ID: "NETWORK ID",
  Name: "NAME",
  Driver: "DRIVER",
  Scope: "SCOPE",
  IPv4: "IPV4",
  IPv6: "IPV6",
  Internal: "INTERNAL",
  Labels: "LABELS",
  CreatedAt: "CREATED AT",
};

/** The fields `network ls --format` sees; keys sorted as Go's json prints a map. */
export function networkRow(n: Network, noTrunc: boolean): Record<string, string> {
  return {
    CreatedAt: n.Created ? goTime(new Date(n.Created)) : "",
    Driver: n.Driver ?? "",
    ID: noTrunc ? n.Id : shortId(n.Id),
    IPv4: String(n.EnableIPv4 ?? true),
    IPv6: String(n.EnableIPv6 ?? false),
    Internal: String(n.Internal ?? false),
    Labels: labelsString(n.Labels),
    Name: n.Name,
    Scope: n.Scope ?? "local",
  };
}

export const CONTAINER_TABLE =
  "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
export const CONTAINER_HEADERS: Record<string, string> = {
  ID: "CONTAINER ID",
  Image: "IMAGE",
  Command: "COMMAND",
  CreatedAt: "CREATED AT",
  RunningFor: "CREATED",
  Status: "STATUS",
  State: "STATE",
  Ports: "PORTS",
  Names: "NAMES",
  Labels: "LABELS",
  Networks: "NETWORKS",
};

/** The fields `ps --format` sees; `now` is a parameter so the relative times are testable. */
export function containerRow(c: ContainerSummary, noTrunc: boolean, now: number): Record<string, string> {
  const command = c.Command ?? "";
  const created = (c.Created ?? 0) * 1000;
  return {
    Command: JSON.stringify(noTrunc ? command : ellipsis(command, 20)),
    CreatedAt: goTime(new Date(created)),
    ID: noTrunc ? c.Id : shortId(c.Id),
    // Containers on the host filesystem have no image; docker's placeholder for "none" keeps the column.
    Image: c.Image || "<none>",
    Labels: labelsString(c.Labels),
    Names: (c.Names ?? []).map((n) => n.replace(/^\//, "")).join(","),
    Networks: Object.keys(c.NetworkSettings?.Networks ?? {}).join(","),
    Ports: formatPorts(c.Ports),
    RunningFor: `${humanDuration(now - created)} ago`,
    State: c.State ?? "",
    Status: c.Status ?? "",
  };
}

/** Go's `%.*g`: `precision` significant digits, no trailing zeros, exponent form for large values. */
function goFormatG(v: number, precision: number): string {
  if (v === 0) return "0";
  const [mantissa, e] = v.toExponential(precision - 1).split("e") as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= precision) {
    const m = mantissa.includes(".") ? mantissa.replace(/\.?0+$/, "") : mantissa;
    return `${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  const fixed = v.toFixed(Math.max(0, precision - 1 - exp));
  return fixed.includes(".") ? fixed.replace(/\.?0+$/, "") : fixed;
}

const DECIMAL_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/**
 * go-units' HumanSizeWithPrecision: powers of 1000 ("4.26MB", "1.2kB"). docker's SIZE column
 * uses precision 3 (so 999999 bytes print, as in docker, "1e+03kB"); its other sizes 4.
 */
export function humanSize(bytes: number, precision = 3): string {
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < DECIMAL_UNITS.length - 1) {
    size /= 1000;
    i++;
  }
  return `${goFormatG(size, precision)}${DECIMAL_UNITS[i]}`;
}

export const IMAGE_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
export const IMAGE_HEADERS: Record<string, string> = {
  Containers: "CONTAINERS",
  CreatedAt: "CREATED AT",
  CreatedSince: "CREATED",
  Digest: "DIGEST",
  ID: "IMAGE ID",
  Repository: "REPOSITORY",
  SharedSize: "SHARED SIZE",
  Size: "SIZE",
  Tag: "TAG",
  UniqueSize: "UNIQUE SIZE",
  VirtualSize: "SIZE",
};

/** `repo:tag` → [repo, tag]; a colon before the last slash is a registry port, not a tag. */
function splitRepoTag(repoTag: string): [string, string] {
  const colon = repoTag.lastIndexOf(":");
  if (colon <= repoTag.lastIndexOf("/")) return [repoTag, "<none>"];
  return [repoTag.slice(0, colon), repoTag.slice(colon + 1)];
}

/**
 * The fields `image ls --format` sees, one row per tag of each image (docker's imageFormat);
 * an untagged image is one `<none>` row. Keys sorted as Go's json prints a map.
 */
export function imageRows(images: ImageSummary[], noTrunc: boolean, now: number): Record<string, string>[] {
  const rows: Record<string, string>[] = [];
  for (const img of images) {
    const size = img.Size ?? 0;
    const shared = img.SharedSize ?? -1;
    const created = (img.Created ?? 0) * 1000;
    const common = {
      Containers: img.Containers === undefined || img.Containers === -1 ? "N/A" : String(img.Containers),
      CreatedAt: goTime(new Date(created)),
      CreatedSince: `${humanDuration(now - created)} ago`,
      Digest: "<none>",
      ID: noTrunc ? img.Id : shortId(img.Id),
      SharedSize: shared === -1 ? "N/A" : humanSize(shared, 4),
      Size: humanSize(size),
      UniqueSize: shared === -1 ? "N/A" : humanSize(size - shared, 4),
      VirtualSize: humanSize(size, 4),
    };
    const tags = (img.RepoTags ?? []).filter((t) => t !== "<none>:<none>");
    if (tags.length === 0) {
      rows.push({ ...common, Repository: "<none>", Tag: "<none>" });
      continue;
    }
    for (const t of tags) {
      const [repo, tag] = splitRepoTag(t);
      rows.push({ ...common, Repository: repo, Tag: tag });
    }
  }
  // Spread order is not Go's: re-key so `{{json .}}` lists the fields alphabetically.
  return rows.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => goStringLess(a, b))));
}
