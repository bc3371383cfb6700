import { readFileSync, statSync } from "node:fs";
import type { ResolverView } from "../dns/records.js";
import { EMBEDDED_DNS, parseResolvConf } from "../runtime/etc-files.js";
import type { EngineContext } from "./context.js";
import { shortId } from "./ids.js";
import { GATEWAY_BRIDGE } from "./networks.js";
import { isIngress } from "./swarm.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord } from "./types.js";

const HOST_RESOLV_CHECK_MS = 1000;

/**
 * Only user-defined networks get name resolution, as in Docker (the default bridge does not), and
 * not the gateway bridge: containers of different overlays meet there, and must not see each other.
 */
export const hasEmbeddedDns = (net: NetworkRecord | undefined): net is NetworkRecord =>
  net !== undefined &&
  !net.predefined &&
  net.driver !== "host" &&
  net.driver !== "null" &&
  net.name !== GATEWAY_BRIDGE;

/** A name-bearing endpoint on a network the asking sandbox shares: of this host or another. */
interface Candidate {
  names: string[];
  containerName: string;
  net: NetworkRecord;
  ipv4?: string | undefined;
  ipv6?: string | undefined;
}

/**
 * What the embedded resolver sees, computed from the engine's records at query time, so names
 * follow connects, disconnects, stops and renames with no cache to invalidate. A sandbox id is
 * the id of the container that owns the namespace.
 */
export class EngineResolverView implements ResolverView {
  private readonly hostUpstreams = { mtimeMs: -1, checkedAt: 0, servers: [] as string[] };
  /** service id → answers given so far, which rotates its list of task addresses */
  private readonly turns = new Map<string, number>();

  constructor(
    private readonly ctx: EngineContext,
    private readonly hostResolvConf = "/etc/resolv.conf",
  ) {}

  /**
   * Networks the sandbox's container shares with others, by id. The routing mesh's `ingress`
   * network carries no names, as in Docker: its tasks find each other on their own networks.
   */
  private sharedNetworks(sandboxId: string): Set<string> {
    const out = new Set<string>();
    for (const ep of this.ctx.endpointsOf(sandboxId)) {
      const net = this.ctx.networks.get(ep.networkId);
      if (hasEmbeddedDns(net) && !isIngress(net)) out.add(ep.networkId);
    }
    return out;
  }

  private *candidates(sandboxId: string): Generator<Candidate> {
    const shared = this.sharedNetworks(sandboxId);
    if (shared.size === 0) return;
    for (const ep of this.ctx.endpoints.values()) {
      if (!shared.has(ep.networkId)) continue;
      const c = this.ctx.containers.get(ep.containerId);
      const net = this.ctx.networks.get(ep.networkId);
      if (c && net && c.state.status === "running") yield local(ep, c, net);
    }
    const cluster = this.ctx.cluster;
    if (!cluster) return;
    for (const e of cluster.endpoints.values()) {
      if (e.host === cluster.nodeName || !shared.has(e.networkId)) continue;
      const net = this.ctx.networks.get(e.networkId);
      if (!net) continue;
      yield {
        names: [e.containerName, shortId(e.containerId), ...e.aliases],
        containerName: e.containerName,
        net,
        ipv4: e.ipv4,
        ipv6: e.ipv6,
      };
    }
  }

  lookup(sandboxId: string, name: string, family: 4 | 6): string[] | undefined {
    const service = this.serviceLookup(sandboxId, name, family);
    if (service) return service;
    let known = false;
    const out: string[] = [];
    for (const cand of this.candidates(sandboxId)) {
      if (!matches(name, cand)) continue;
      known = true;
      const address = family === 4 ? cand.ipv4 : cand.ipv6;
      if (address && !out.includes(address)) out.push(address);
    }
    return known ? out : undefined;
  }

  /**
   * A service on the networks the sandbox shares with it: `NAME` is its virtual IP there (vip
   * mode) or its running tasks' addresses in rotating order (dnsrr); `tasks.NAME` is its running
   * tasks' addresses. IPv4 only: a service's addresses are IPv4, so AAAA gets an empty answer.
   */
  private serviceLookup(sandboxId: string, name: string, family: 4 | 6): string[] | undefined {
    const cluster = this.ctx.cluster;
    if (!cluster || cluster.services.size === 0) return undefined;
    const lower = name.toLowerCase();
    const tasksOnly = lower.startsWith("tasks.");
    const wanted = tasksOnly ? lower.slice("tasks.".length) : lower;
    const service = [...cluster.services.values()].find((s) => s.name.toLowerCase() === wanted);
    if (!service) return undefined;
    const shared = this.sharedNetworks(sandboxId);
    const nets = service.networks.filter((id) => shared.has(id));
    if (nets.length === 0) return undefined;
    if (family === 6) return [];
    if (!tasksOnly && service.endpointMode === "vip")
      return nets.map((id) => service.vips[id]).filter((vip): vip is string => vip !== undefined);
    const tasks = [...cluster.tasks.values()]
      .filter((t) => t.serviceId === service.id && t.desired === "running")
      .sort((a, b) => a.slot - b.slot);
    const out: string[] = [];
    for (const t of tasks) {
      const st = cluster.taskStatuses.get(t.id);
      if (st?.state !== "running") continue;
      for (const id of nets) {
        const address = st.addresses[id];
        if (address && !out.includes(address)) out.push(address);
      }
    }
    const turn = this.turns.get(service.id) ?? 0;
    this.turns.set(service.id, turn + 1);
    if (this.turns.size > cluster.services.size + 64)
      for (const id of this.turns.keys()) if (!cluster.services.has(id)) this.turns.delete(id);
    const k = out.length > 0 ? turn % out.length : 0;
    return [...out.slice(k), ...out.slice(0, k)];
  }

  reverse(sandboxId: string, address: string): string | undefined {
    for (const cand of this.candidates(sandboxId)) {
      if (cand.ipv4 === address || cand.ipv6 === address) return `${cand.containerName}.${cand.net.name}`;
    }
    return undefined;
  }

  /**
   * A container's --dns, else the daemon's --dns, else the host's resolvers (loopback ones work:
   * forwarding happens in the host's namespace). A container only on internal networks gets no
   * upstream, as in Docker: internal means nothing outside is reached, DNS included.
   */
  upstreams(sandboxId: string): string[] {
    const eps = this.ctx.endpointsOf(sandboxId);
    if (eps.length > 0 && eps.every((e) => this.ctx.networks.get(e.networkId)?.internal)) return [];
    const c = this.ctx.containers.get(sandboxId);
    const servers =
      c && c.dns.length > 0 ? c.dns : this.ctx.dns.length > 0 ? this.ctx.dns : this.hostServers();
    return servers.filter((s) => s !== EMBEDDED_DNS);
  }

  /** The host's resolvers, re-read when /etc/resolv.conf changes (looked at no more than once a second). */
  private hostServers(): string[] {
    const now = Date.now();
    const cache = this.hostUpstreams;
    if (now - cache.checkedAt < HOST_RESOLV_CHECK_MS) return cache.servers;
    cache.checkedAt = now;
    try {
      const { mtimeMs } = statSync(this.hostResolvConf);
      if (mtimeMs !== cache.mtimeMs) {
        cache.servers = parseResolvConf(readFileSync(this.hostResolvConf, "utf8")).nameservers;
        cache.mtimeMs = mtimeMs;
      }
    } catch {
      cache.servers = [];
      cache.mtimeMs = -1;
    }
    return cache.servers;
  }
}

const local = (ep: EndpointRecord, c: ContainerRecord, net: NetworkRecord): Candidate => ({
  names: [c.name, shortId(c.id), ...ep.aliases],
  containerName: c.name,
  net,
  ipv4: ep.ipv4,
  ipv6: ep.ipv6,
});

function matches(name: string, cand: Candidate): boolean {
  const lower = name.toLowerCase();
  const netName = cand.net.name.toLowerCase();
  for (const n of cand.names) {
    const l = n.toLowerCase();
    if (lower === l || lower === `${l}.${netName}`) return true;
  }
  return false;
}
