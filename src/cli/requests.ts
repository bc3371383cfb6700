/**
 * Turns parsed flags into Docker Engine API request bodies, following the docker CLI's own
 * rules (how subnets pair with ranges and gateways, how `-p` specs expand, which endpoint gets
 * `--ip`), so that ctnet and docker send the daemon the same thing for the same command line.
 */
import ipaddr from "ipaddr.js";
import type {
  ContainerCreateRequest,
  EndpointSettings,
  Filters,
  IPAMConfig,
  NetworkCreateRequest,
  PortBinding,
} from "../client/client.js";
import { UsageError } from "./errors.js";

/** `KEY=VALUE` list → map; a bare `KEY` maps to "" as in docker's MapOpts. */
export function parseKeyValues(values: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf("=");
    if (eq === -1) out[v] = "";
    else out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

/** `-f key=value`… → Docker's `map[string][]string` filters. */
export function parseFilters(values: string[] | undefined): Filters {
  const out: Filters = {};
  for (const v of values ?? []) {
    const eq = v.indexOf("=");
    if (eq <= 0) throw new UsageError(`bad format of filter (expected name=value): ${v}`);
    const key = v.slice(0, eq).trim().toLowerCase();
    out[key] = [...(out[key] ?? []), v.slice(eq + 1).trim()];
  }
  return out;
}

/** Whether `data` (an address or a CIDR) lies inside `subnet`; families never match each other. */
export function subnetContains(subnet: string, data: string): boolean {
  let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    range = ipaddr.parseCIDR(subnet);
  } catch {
    throw new UsageError(`invalid subnet ${subnet}: invalid CIDR address`);
  }
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = data.includes("/") ? ipaddr.parseCIDR(data)[0] : ipaddr.parse(data);
  } catch {
    throw new UsageError(`invalid address ${data}`);
  }
  return addr.kind() === range[0].kind() && addr.match(range);
}

export interface NetworkCreateOptions {
  name: string;
  driver?: string;
  subnet?: string[];
  ipRange?: string[];
  gateway?: string[];
  auxAddress?: string[];
  ipamDriver?: string;
  ipamOpt?: string[];
  ipv6?: boolean;
  internal?: boolean;
  attachable?: boolean;
  opt?: string[];
  label?: string[];
}

/**
 * Docker's consolidation of IPAM flags: each `--ip-range`, `--gateway` and `--aux-address` goes to
 * the subnet that contains it (not simply the i-th one), at most one range and gateway per subnet,
 * and overlapping subnets are refused.
 */
export function ipamConfigs(
  o: Pick<NetworkCreateOptions, "subnet" | "ipRange" | "gateway" | "auxAddress">,
): IPAMConfig[] {
  const subnets = o.subnet ?? [];
  const ranges = o.ipRange ?? [];
  const gateways = o.gateway ?? [];
  if (subnets.length < ranges.length || subnets.length < gateways.length) {
    throw new UsageError("every ip-range or gateway must have a corresponding subnet");
  }
  const configs = new Map<string, IPAMConfig & { AuxiliaryAddresses: Record<string, string> }>();
  for (const s of subnets) {
    if (!ipaddr.isValidCIDR(s)) throw new UsageError(`invalid subnet ${s}: invalid CIDR address`);
    for (const other of configs.keys()) {
      if (subnetContains(s, other) || subnetContains(other, s)) {
        throw new UsageError("multiple overlapping subnet configuration is not supported");
      }
    }
    configs.set(s, { Subnet: s, AuxiliaryAddresses: {} });
  }
  const assign = (
    value: string,
    field: "IPRange" | "Gateway",
    what: string,
    plural: string,
    preposition: string,
  ) => {
    let matched = false;
    for (const [s, cfg] of configs) {
      if (!subnetContains(s, value)) continue;
      if (cfg[field]) {
        throw new UsageError(
          `cannot configure multiple ${plural} (${value}, ${cfg[field]}) ${preposition} the same subnet (${s})`,
        );
      }
      cfg[field] = value;
      matched = true;
    }
    if (!matched) throw new UsageError(`no matching subnet for ${what} ${value}`);
  };
  for (const r of ranges) assign(r, "IPRange", "range", "ranges", "on");
  for (const g of gateways) assign(g, "Gateway", "gateway", "gateways", "for");
  for (const [name, addr] of Object.entries(parseKeyValues(o.auxAddress))) {
    if (!addr) throw new UsageError(`invalid aux-address ${name}: expected NAME=IP`);
    let matched = false;
    for (const [s, cfg] of configs) {
      if (!subnetContains(s, addr)) continue;
      cfg.AuxiliaryAddresses[name] = addr;
      matched = true;
    }
    if (!matched) throw new UsageError(`no matching subnet for aux-address ${addr}`);
  }
  // Empty AuxiliaryAddresses are left out, as Go's `omitempty` does in docker's request.
  return [...configs.values()].map(({ AuxiliaryAddresses, ...cfg }) =>
    Object.keys(AuxiliaryAddresses).length > 0 ? { ...cfg, AuxiliaryAddresses } : cfg,
  );
}

export function networkCreateBody(o: NetworkCreateOptions): NetworkCreateRequest {
  return {
    Name: o.name,
    Driver: o.driver || "bridge",
    Internal: o.internal ?? false,
    Attachable: o.attachable ?? false,
    EnableIPv6: o.ipv6 ?? false,
    Options: parseKeyValues(o.opt),
    Labels: parseKeyValues(o.label),
    IPAM: {
      Driver: o.ipamDriver || "default",
      Config: ipamConfigs(o),
      Options: parseKeyValues(o.ipamOpt),
    },
  };
}

export interface PortMapping {
  /** `PORT/PROTO`, the key of ExposedPorts and PortBindings. */
  port: string;
  binding: PortBinding;
}

function parsePortRange(s: string, what: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  const start = Number(m?.[1]);
  const end = m?.[2] ? Number(m[2]) : start;
  if (!m || start < 1 || end > 65535 || end < start) throw new UsageError(`invalid ${what}: ${s}`);
  return [start, end];
}

/** go-connections' splitParts: the last two fields are ports, everything before them the IP. */
function splitPortSpec(spec: string): [string, string, string] {
  const parts = spec.split(":");
  const n = parts.length;
  const container = parts[n - 1] as string;
  if (n === 1) return ["", "", container];
  if (n === 2) return ["", parts[0] as string, container];
  return [parts.slice(0, n - 2).join(":"), parts[n - 2] as string, container];
}

/** docker's `--publish target=80,published=8080,protocol=udp` long form, as a short spec. */
function standardPortSpec(spec: string): string {
  if (!spec.includes("=")) return spec;
  const params: Record<string, string> = { protocol: "tcp" };
  for (const param of spec.split(",")) {
    const eq = param.indexOf("=");
    if (eq <= 0) {
      throw new UsageError(`invalid publish opts format (should be name=value but got '${param}')`);
    }
    params[param.slice(0, eq)] = param.slice(eq + 1);
  }
  return `${params.published ?? ""}:${params.target ?? ""}/${params.protocol}`;
}

/**
 * Docker's port spec, `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` (go-connections' ParsePortSpec),
 * with ranges on either side and IPv6 addresses in brackets. Ranges expand into one binding per
 * port; a host range against a single container port is passed whole, so that the daemon picks a
 * free port from it, as docker does.
 */
export function parsePortSpec(rawSpec: string): PortMapping[] {
  const spec = standardPortSpec(rawSpec);
  let [ip, hostPart, containerPart] = splitPortSpec(spec);
  let proto = "tcp";
  const slash = containerPart.indexOf("/");
  if (slash !== -1) {
    proto = containerPart.slice(slash + 1).toLowerCase();
    containerPart = containerPart.slice(0, slash);
  }
  if (ip.startsWith("[")) {
    if (!ip.endsWith("]")) throw new UsageError(`invalid IP address ${ip}: missing ']' in address`);
    ip = ip.slice(1, -1);
  }
  if (ip && !ipaddr.isValid(ip)) throw new UsageError(`invalid IP address: ${ip}`);
  if (containerPart === "") throw new UsageError(`no port specified: ${spec}<empty>`);
  const [cStart, cEnd] = parsePortRange(containerPart, "containerPort");
  const host = hostPart ? parsePortRange(hostPart, "hostPort") : undefined;
  if (host && host[1] - host[0] !== cEnd - cStart && cEnd !== cStart) {
    throw new UsageError(
      `invalid ranges specified for container and host Ports: ${containerPart} and ${hostPart}`,
    );
  }
  if (!["tcp", "udp", "sctp"].includes(proto)) throw new UsageError(`invalid proto: ${proto}`);
  const count = cEnd - cStart + 1;
  const out: PortMapping[] = [];
  for (let i = 0; i < count; i++) {
    let hostPort = "";
    if (host) {
      hostPort = String(host[0] + i);
      if (count === 1 && host[0] !== host[1]) hostPort += `-${host[1]}`;
    }
    out.push({ port: `${cStart + i}/${proto}`, binding: { HostIp: ip, HostPort: hostPort } });
  }
  return out;
}

/** `--expose PORT[/PROTO]` or `START-END[/PROTO]`: the `PORT/PROTO` keys it adds to ExposedPorts. */
export function parseExpose(spec: string): string[] {
  if (spec.includes(":")) throw new UsageError(`invalid port format for --expose: ${spec}`);
  const slash = spec.indexOf("/");
  const proto = slash === -1 ? "tcp" : spec.slice(slash + 1).toLowerCase();
  const ports = slash === -1 ? spec : spec.slice(0, slash);
  if (!["tcp", "udp", "sctp"].includes(proto)) throw new UsageError(`invalid proto: ${proto}`);
  let range: [number, number];
  try {
    range = parsePortRange(ports, "port");
  } catch {
    throw new UsageError(`invalid range format for --expose: ${spec}`);
  }
  const out: string[] = [];
  for (let p = range[0]; p <= range[1]; p++) out.push(`${p}/${proto}`);
  return out;
}

export interface NetworkSpec {
  name: string;
  aliases: string[];
  ipv4?: string;
  ipv6?: string;
}

/** `--network NAME` or docker's advanced form `--network name=NET,alias=A,ip=IP,ip6=IP6`. */
export function parseNetworkFlag(value: string): NetworkSpec {
  if (!value.includes("=")) return { name: value, aliases: [] };
  const spec: NetworkSpec = { name: "", aliases: [] };
  for (const field of value.split(",")) {
    const eq = field.indexOf("=");
    const key = field.slice(0, eq).trim();
    const v = field.slice(eq + 1).trim();
    if (eq === -1) throw new UsageError(`invalid field "${field}" in --network: must be key=value`);
    if (key === "name") spec.name = v;
    else if (key === "alias") spec.aliases.push(v);
    else if (key === "ip") spec.ipv4 = v;
    else if (key === "ip6") spec.ipv6 = v;
    else throw new UsageError(`invalid field key "${key}" in --network`);
  }
  if (!spec.name) throw new UsageError(`invalid --network "${value}": name is required`);
  return spec;
}

const BUILTIN_MODES = new Set(["bridge", "host", "none", "default"]);

function isUserDefined(mode: string): boolean {
  return !BUILTIN_MODES.has(mode) && !mode.startsWith("container:");
}

export interface RunOptions {
  /** The container's image; none runs `command` on the host filesystem. */
  image?: string;
  /** With an image, may be empty: the image's CMD applies. */
  command: string[];
  detach?: boolean;
  network?: string[];
  ip?: string;
  ip6?: string;
  networkAlias?: string[];
  hostname?: string;
  dns?: string[];
  env?: string[];
  rm?: boolean;
  publish?: string[];
  publishAll?: boolean;
  expose?: string[];
}

/**
 * The body of POST /containers/create for `ctnet run`. Without an image the container runs on the
 * host filesystem and needs a command; with one, an empty command leaves the image's CMD to
 * apply. Every `--network` gets its own EndpointsConfig entry (API ≥ 1.44 accepts several);
 * `--ip`, `--ip6` and `--network-alias` apply to the first, as in docker.
 */
export function containerCreateBody(
  o: RunOptions,
  env: NodeJS.ProcessEnv = process.env,
): ContainerCreateRequest {
  if (o.command.length === 0 && !o.image) throw new UsageError('"run" requires a command to run');
  const networks = (o.network ?? []).map(parseNetworkFlag);
  if (networks.length === 0) networks.push({ name: "bridge", aliases: [] });
  const userDefined = networks.filter((n) => isUserDefined(n.name)).length;
  if (userDefined > 0 && userDefined < networks.length) {
    throw new UsageError(
      "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
    );
  }
  const [first] = networks;
  first.ipv4 ??= o.ip;
  first.ipv6 ??= o.ip6;
  first.aliases.push(...(o.networkAlias ?? []));

  const endpoints: Record<string, EndpointSettings> = {};
  for (const n of networks) {
    if (endpoints[n.name]) throw new UsageError(`network "${n.name}" is specified multiple times`);
    // A container sharing another's namespace has no endpoint of its own.
    if (n.name.startsWith("container:")) continue;
    const ep: EndpointSettings = {};
    if (n.ipv4 || n.ipv6) {
      ep.IPAMConfig = {
        ...(n.ipv4 ? { IPv4Address: n.ipv4 } : {}),
        ...(n.ipv6 ? { IPv6Address: n.ipv6 } : {}),
      };
    }
    if (n.aliases.length > 0) ep.Aliases = n.aliases;
    endpoints[n.name] = ep;
  }

  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, PortBinding[]> = {};
  for (const spec of o.publish ?? []) {
    for (const { port, binding } of parsePortSpec(spec)) {
      exposed[port] = {};
      bindings[port] = [...(bindings[port] ?? []), binding];
    }
  }
  for (const spec of o.expose ?? []) {
    for (const port of parseExpose(spec)) exposed[port] = {};
  }

  return {
    Hostname: o.hostname ?? "",
    Env: (o.env ?? []).map((e) => (e.includes("=") || env[e] === undefined ? e : `${e}=${env[e]}`)),
    ...(o.command.length > 0 || !o.image ? { Cmd: o.command } : {}),
    Image: o.image ?? "",
    Tty: false,
    OpenStdin: false,
    AttachStdout: !o.detach,
    AttachStderr: !o.detach,
    ExposedPorts: exposed,
    HostConfig: {
      NetworkMode: first.name,
      AutoRemove: o.rm ?? false,
      Dns: o.dns ?? [],
      PortBindings: bindings,
      PublishAllPorts: o.publishAll ?? false,
    },
    NetworkingConfig: { EndpointsConfig: endpoints },
  };
}
