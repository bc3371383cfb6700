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

/** A candidate on one network, in the index under each name it answers to there. */
interface Entry {
  cand: Candidate;
  networkId: string;
}

/**
 * Every name and address the resolver can answer, derived from the engine's records (and the
 * cluster's mirror) in one pass, so that a query costs a map lookup however many containers there
 * are. It is rebuilt on the first query after any change.
 */
interface NameIndex {
  stamp: string;
  /** lowercased `name` and `name.network` → entries, in the order of the records */
  byName: Map<string, Entry[]>;
  byAddress: Map<string, Entry[]>;
  /** sandbox → the networks it shares with others (those with names) */
  shared: Map<string, Set<string>>;
}

/**
 * What the embedded resolver sees, derived from the engine's records, so names follow connects,
 * disconnects, stops and renames: every change happens in an operation under the engine's lock
 * (or in the cluster's mirror), and the index is rebuilt once either has moved on. A sandbox id is
 * the id of the container that owns the namespace.
 */
export class EngineResolverView implements ResolverView {
  private readonly hostUpstreams = { mtimeMs: -1, checkedAt: 0, servers: [] as string[] };
  /** service id → answers given so far, which rotates its list of task addresses */
  private readonly turns = new Map<string, number>();
  private cached: NameIndex | undefined;

  constructor(
    private readonly ctx: EngineContext,
    private readonly hostResolvConf = "/etc/resolv.conf",
  ) {}

  private index(): NameIndex {
    const cluster = this.ctx.cluster;
    const stamp = `${this.ctx.lock.generation}/${cluster ? `${cluster.nodeName}/${cluster.changes}` : ""}`;
    if (this.cached?.stamp === stamp) return this.cached;
    const index: NameIndex = { stamp, byName: new Map(), byAddress: new Map(), shared: new Map() };
    for (const ep of this.ctx.endpoints.values()) {
      const net = this.ctx.networks.get(ep.networkId);
      // The routing mesh's `ingress` network carries no names, as in Docker: its tasks find each
      // other on their own networks.
      if (!hasEmbeddedDns(net) || isIngress(net)) continue;
      const nets = index.shared.get(ep.containerId) ?? new Set<string>();
      index.shared.set(ep.containerId, nets.add(net.id));
      const c = this.ctx.containers.get(ep.containerId);
      if (c && c.state.status === "running") add(index, local(ep, c, net), net.id);
    }
    if (cluster)
      for (const e of cluster.endpoints.values()) {
        if (e.host === cluster.nodeName) continue;
        const net = this.ctx.networks.get(e.networkId);
        if (!net) continue;
        const cand = {
          names: [e.containerName, shortId(e.containerId), ...e.aliases],
          containerName: e.containerName,
          net,
          ipv4: e.ipv4,
          ipv6: e.ipv6,
        };
        add(index, cand, net.id);
      }
    this.cached = index;
    return index;
  }

  /** The index's entries under `key` on the networks `sandboxId` shares; undefined for none. */
  private visible(sandboxId: string, map: "byName" | "byAddress", key: string): Entry[] | undefined {
    const index = this.index();
    const shared = index.shared.get(sandboxId);
    const entries = shared && index[map].get(key);
    if (!shared || !entries) return undefined;
    const out = entries.filter((e) => shared.has(e.networkId));
    return out.length > 0 ? out : undefined;
  }

  lookup(sandboxId: string, name: string, family: 4 | 6): string[] | undefined {
    const service = this.serviceLookup(sandboxId, name, family);
    if (service) return service;
    const entries = this.visible(sandboxId, "byName", name.toLowerCase());
    if (!entries) return undefined;
    const out: string[] = [];
    for (const { cand } of entries) {
      const address = family === 4 ? cand.ipv4 : cand.ipv6;
      if (address && !out.includes(address)) out.push(address);
    }
    return out;
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
    const shared = this.index().shared.get(sandboxId);
    const nets = service.networks.filter((id) => shared?.has(id));
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
    const first = this.visible(sandboxId, "byAddress", address)?.[0];
    return first && `${first.cand.containerName}.${first.cand.net.name}`;
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

function push(map: Map<string, Entry[]>, key: string, entry: Entry): void {
  const list = map.get(key);
  if (!list) map.set(key, [entry]);
  else if (list.at(-1) !== entry) list.push(entry);
}

/** Files a candidate under its names, each alone and followed by its network's name, and its addresses. */
function add(index: NameIndex, cand: Candidate, networkId: string): void {
  const entry = { cand, networkId };
  const netName = cand.net.name.toLowerCase();
  for (const n of cand.names) {
    const l = n.toLowerCase();
    push(index.byName, l, entry);
    push(index.byName, `${l}.${netName}`, entry);
  }
  for (const address of [cand.ipv4, cand.ipv6]) if (address) push(index.byAddress, address, entry);
}
