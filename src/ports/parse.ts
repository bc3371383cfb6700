/**
 * Docker API port shapes in and out: `ExposedPorts`, `HostConfig.PortBindings` and
 * `PublishAllPorts` become validated PortBindingRequests; PortBindings given out become
 * `NetworkSettings.Ports` (inspect) and `Ports` (container list) as Docker shows them.
 */
import { isIPv4, isIPv6 } from "node:net";
import ipaddr from "ipaddr.js";
import { InvalidParameterError } from "../errors.js";
import type { PortBinding, PortBindingRequest, PortProto } from "./types.js";

export interface ApiPortBinding {
  HostIp?: string;
  HostPort?: string | number;
}

/** Keys are `PORT/PROTO` (`PORT` alone means tcp), as in Docker's nat.PortMap. */
export type ApiPortMap = Record<string, ApiPortBinding[] | null | undefined>;

export interface PortSummary {
  IP?: string;
  PrivatePort: number;
  PublicPort?: number;
  Type: PortProto;
}

export interface ContainerPort {
  proto: PortProto;
  port: number;
}

const NUMBER = /^\d{1,5}$/;

function portNumber(text: string): number | undefined {
  const n = NUMBER.test(text) ? Number(text) : Number.NaN;
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** `80/tcp`, `53/udp` or `80` (tcp); the protocol is case-insensitive. */
export function parseContainerPort(key: string): ContainerPort {
  const slash = key.indexOf("/");
  const portText = slash === -1 ? key : key.slice(0, slash);
  const proto = slash === -1 ? "tcp" : key.slice(slash + 1).toLowerCase();
  const port = portNumber(portText);
  if (port === undefined) throw new InvalidParameterError(`invalid port ${JSON.stringify(key)}`);
  if (proto !== "tcp" && proto !== "udp") {
    // sctp is valid for Docker, but a host port can only be held with a Node tcp or udp socket.
    throw new InvalidParameterError(
      `invalid protocol ${JSON.stringify(proto)} in ${JSON.stringify(key)}: ctnet publishes tcp and udp ports`,
    );
  }
  return { proto, port };
}

/** "" stays "" (all addresses); others become canonical, IPv4-mapped IPv6 becomes IPv4. */
export function parseHostIp(ip: string | undefined): string {
  if (ip === undefined || ip === "") return "";
  if (!isIPv4(ip) && !(isIPv6(ip) && !ip.includes("%"))) {
    throw new InvalidParameterError(`invalid host IP ${JSON.stringify(ip)}`);
  }
  return ipaddr.process(ip).toString();
}

/** "" or "0" = ephemeral (0-0), "8000" = that port, "8000-8010" = a free one in the range. */
export function parseHostPort(value: string | number | undefined, key: string): [number, number] {
  const text = String(value ?? "").trim();
  if (text === "" || text === "0") return [0, 0];
  const dash = text.indexOf("-");
  const start = portNumber(dash === -1 ? text : text.slice(0, dash));
  const end = dash === -1 ? start : portNumber(text.slice(dash + 1));
  if (start === undefined || end === undefined || end < start) {
    throw new InvalidParameterError(`invalid host port ${JSON.stringify(text)} for ${key}`);
  }
  return [start, end];
}

function keyOf(p: ContainerPort): string {
  return `${p.port}/${p.proto}`;
}

/**
 * The container ports a container exposes, as canonical `PORT/PROTO` keys, sorted by port then
 * protocol: those of ExposedPorts and of PortBindings, as Docker merges them.
 */
export function exposedPorts(exposed: Record<string, unknown> | undefined, bindings?: ApiPortMap): string[] {
  const ports = new Map<string, ContainerPort>();
  for (const key of [...Object.keys(exposed ?? {}), ...Object.keys(bindings ?? {})]) {
    const p = parseContainerPort(key);
    ports.set(keyOf(p), p);
  }
  return [...ports.values()].sort((a, b) => a.port - b.port || a.proto.localeCompare(b.proto)).map(keyOf);
}

/**
 * Every host binding a container asks for. With PublishAllPorts, each exposed port that has no
 * binding of its own gets an ephemeral one on all addresses (Docker's `-P`); a port listed in
 * PortBindings with null or [] is exposed only.
 */
export function portBindingRequests(opts: {
  exposedPorts?: Record<string, unknown>;
  portBindings?: ApiPortMap;
  publishAll?: boolean;
}): PortBindingRequest[] {
  const out: PortBindingRequest[] = [];
  const bound = new Set<string>();
  for (const [key, list] of Object.entries(opts.portBindings ?? {})) {
    const { proto, port } = parseContainerPort(key);
    for (const b of list ?? []) {
      const [hostPortStart, hostPortEnd] = parseHostPort(b.HostPort, key);
      out.push({ proto, hostIp: parseHostIp(b.HostIp), hostPortStart, hostPortEnd, containerPort: port });
      bound.add(keyOf({ proto, port }));
    }
  }
  if (opts.publishAll) {
    for (const key of exposedPorts(opts.exposedPorts, opts.portBindings)) {
      if (bound.has(key)) continue;
      const { proto, port } = parseContainerPort(key);
      out.push({ proto, hostIp: "", hostPortStart: 0, hostPortEnd: 0, containerPort: port });
    }
  }
  return out;
}

/**
 * The host addresses a binding answers on, as Docker reports them: "" is 0.0.0.0 plus, when the
 * port answers over IPv6 (the container has an IPv6 address to forward to), "::".
 */
function shownIps(b: PortBinding, ipv6: boolean): string[] {
  if (b.hostIp !== "") return [b.hostIp];
  return ipv6 ? ["0.0.0.0", "::"] : ["0.0.0.0"];
}

/** `NetworkSettings.Ports`: every exposed port, null when it is not published. */
export function portMapView(
  exposed: string[],
  bindings: PortBinding[],
  ipv6: boolean,
): Record<string, { HostIp: string; HostPort: string }[] | null> {
  const out: Record<string, { HostIp: string; HostPort: string }[] | null> = {};
  for (const key of exposed) out[key] = null;
  for (const b of bindings) {
    const key = keyOf({ proto: b.proto, port: b.containerPort });
    const list = out[key] ?? [];
    for (const ip of shownIps(b, ipv6)) list.push({ HostIp: ip, HostPort: String(b.hostPort) });
    out[key] = list;
  }
  return out;
}

/** The container list's `Ports`: one entry per host address, and one bare entry per unpublished port. */
export function portSummaries(exposed: string[], bindings: PortBinding[], ipv6: boolean): PortSummary[] {
  const out: PortSummary[] = [];
  const published = new Set<string>();
  for (const b of bindings) {
    published.add(keyOf({ proto: b.proto, port: b.containerPort }));
    for (const ip of shownIps(b, ipv6)) {
      out.push({ IP: ip, PrivatePort: b.containerPort, PublicPort: b.hostPort, Type: b.proto });
    }
  }
  for (const key of exposed) {
    if (published.has(key)) continue;
    const { proto, port } = parseContainerPort(key);
    out.push({ PrivatePort: port, Type: proto });
  }
  return out;
}
