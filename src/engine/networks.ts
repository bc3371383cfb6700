import {
  BRIDGE_NAME,
  bridgeSettings,
  DEFAULT_BRIDGE,
  defaultGateway,
  ENABLE_ICC,
  ENABLE_MASQUERADE,
  HOST_BINDING_IPV4,
  MTU,
} from "../drivers/bridge/bridge.js";
import { ConflictError, ForbiddenError, InvalidParameterError, NotFoundError } from "../errors.js";
import type { FirewallPort, FirewallState } from "../firewall/model.js";
import type { Pool } from "../ipam/index.js";
import { log } from "../log.js";
import type { PortBinding } from "../ports/types.js";
import type { EngineContext } from "./context.js";
import { completeGlobalNetwork, type GlobalNetworkDraft, requireCluster } from "./global-networks.js";
import { lookup, newId, shortId } from "./ids.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord, PoolRecord } from "./types.js";
import { Undo } from "./undo.js";

export interface IpamConfigRequest {
  subnet?: string;
  ipRange?: string;
  gateway?: string;
  auxAddresses?: Record<string, string>;
}

export interface NetworkCreateRequest {
  name: string;
  driver: string;
  internal: boolean;
  attachable: boolean;
  enableIPv4: boolean;
  enableIPv6: boolean;
  options: Record<string, string>;
  labels: Record<string, string>;
  ipamDriver: string;
  ipamOptions: Record<string, string>;
  ipamConfig: IpamConfigRequest[];
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** Drivers that have exactly one predefined network and no user-defined ones. */
const SINGLETON_DRIVERS = new Set(["host", "null"]);
export const DEFAULT_BRIDGE_DEVICE = "ctnet0";
export const DEFAULT_BRIDGE_SUBNET = "172.17.0.0/16";
/** Docker calls it docker_gwbridge. */
export const GATEWAY_BRIDGE = "ctnet_gwbridge";

const familyOf = (cidr: string): 4 | 6 => (cidr.includes(":") ? 6 : 4);

/** The gateway the network's endpoints route through (bridge networks honour DefaultGatewayIPv4/IPv6, as Docker's do). */
export const endpointGateway = (net: NetworkRecord, pool: PoolRecord): string =>
  net.driver === "bridge" ? defaultGateway(pool) : pool.gateway;

/**
 * The firewall's desired state, from the records: networks, their ports with ICC off, published
 * ports (containers' and the routing mesh's).
 */
export function firewallState(
  networks: Iterable<NetworkRecord>,
  endpoints: Iterable<EndpointRecord>,
  containers: Iterable<ContainerRecord>,
  ingressPorts: FirewallPort[] = [],
): FirewallState {
  const eps = [...endpoints];
  const nets = [...networks];
  const out: FirewallState = {
    networks: [],
    ports: [...publishedPorts(nets, eps, containers), ...ingressPorts],
  };
  for (const n of nets) {
    if (n.driver !== "bridge" || !n.device) continue;
    const s = bridgeSettings(n);
    // With ICC off the bridge table drops IP between the network's ports, so it needs their names.
    const ports = s.icc
      ? undefined
      : eps
          .filter((e) => e.networkId === n.id)
          .map((e) => e.hostIfname)
          .sort();
    out.networks.push({
      id: n.id,
      bridge: n.device,
      subnets4: n.pools.filter((p) => p.family === 4).map((p) => p.subnet),
      subnets6: n.pools.filter((p) => p.family === 6).map((p) => p.subnet),
      internal: n.internal,
      masquerade: s.masquerade,
      icc: s.icc,
      ...(ports ? { ports } : {}),
    });
  }
  out.networks.sort((a, b) => a.id.localeCompare(b.id));
  return out;
}

/**
 * Published ports as DNAT targets: each goes to the container's endpoint that carries its default
 * route (Docker's choice), on IPv4 and, where the container has one, IPv6.
 */
function publishedPorts(
  nets: NetworkRecord[],
  endpoints: EndpointRecord[],
  containers: Iterable<ContainerRecord>,
): FirewallPort[] {
  const byId = new Map(nets.map((n) => [n.id, n]));
  const byContainer = new Map<string, EndpointRecord[]>();
  for (const e of endpoints) {
    const list = byContainer.get(e.containerId);
    if (list) list.push(e);
    else byContainer.set(e.containerId, [e]);
  }
  const out: FirewallPort[] = [];
  for (const c of containers) {
    if (c.published.length === 0) continue;
    const ep = (byContainer.get(c.id) ?? [])
      .sort((a, b) => a.order - b.order)
      .find((e) => {
        const n = byId.get(e.networkId);
        return n?.driver === "bridge" && !n.internal && n.device !== undefined;
      });
    const bridge = ep && byId.get(ep.networkId)?.device;
    if (!ep || !bridge) continue;
    for (const p of containerPorts(c.published, ep, bridge)) out.push(p);
  }
  return out;
}

/**
 * A container's DNAT entries, the same objects for as long as its bindings and endpoint stay the
 * same (a container's `published` array is replaced, never changed in place): the firewall renders
 * each entry once, so publishing one more port costs the same however many exist.
 */
const portCache = new WeakMap<PortBinding[], { endpoint: string; ports: FirewallPort[] }>();

function containerPorts(published: PortBinding[], ep: EndpointRecord, bridge: string): FirewallPort[] {
  const endpoint = `${ep.id} ${ep.ipv4 ?? ""} ${ep.ipv6 ?? ""} ${bridge}`;
  const cached = portCache.get(published);
  if (cached?.endpoint === endpoint) return cached.ports;
  const ports: FirewallPort[] = [];
  for (const b of published) {
    const v6 = b.hostIp.includes(":");
    const port = {
      proto: b.proto,
      hostIp: b.hostIp,
      hostPort: b.hostPort,
      containerPort: b.containerPort,
      bridge,
    };
    if (ep.ipv4 && (b.hostIp === "" || !v6)) ports.push({ ...port, containerIp: ep.ipv4 });
    if (ep.ipv6 && (b.hostIp === "" || v6)) ports.push({ ...port, containerIp: ep.ipv6 });
  }
  portCache.set(published, { endpoint, ports });
  return ports;
}

/** Network life cycle: create, remove, prune, and the predefined networks. */
export class Networks {
  constructor(private readonly ctx: EngineContext) {}

  find(ref: string): NetworkRecord {
    const n = lookup(this.ctx.networks.values(), ref, "network");
    if (!n) throw new NotFoundError(`network ${ref} not found`);
    return n;
  }

  tryFind(ref: string): NetworkRecord | undefined {
    return lookup(this.ctx.networks.values(), ref, "network");
  }

  list(): NetworkRecord[] {
    return [...this.ctx.networks.values()].sort((a, b) => a.created.localeCompare(b.created));
  }

  applyFirewall(): void {
    this.ctx.firewall.update(
      firewallState(
        this.ctx.networks.values(),
        this.ctx.endpoints.values(),
        this.ctx.containers.values(),
        this.ctx.ingressPorts,
      ),
    );
  }

  create(req: NetworkCreateRequest): Promise<NetworkRecord> {
    return this.ctx.lock.run(() => this.createLocked(req, false));
  }

  /** Creates bridge, host and none when the store does not have them yet (first start). */
  async ensurePredefined(): Promise<void> {
    const have = (driver: string) =>
      [...this.ctx.networks.values()].some((n) => n.predefined && n.driver === driver);
    const base = { internal: false, attachable: false, enableIPv4: true, enableIPv6: false, labels: {} };
    const ipam = { ipamDriver: "default", ipamOptions: {} };
    if (!have("bridge")) {
      await this.createLocked(
        {
          ...base,
          ...ipam,
          name: "bridge",
          driver: "bridge",
          options: {
            [DEFAULT_BRIDGE]: "true",
            [ENABLE_ICC]: "true",
            [ENABLE_MASQUERADE]: "true",
            [HOST_BINDING_IPV4]: "0.0.0.0",
            [BRIDGE_NAME]: DEFAULT_BRIDGE_DEVICE,
            [MTU]: "1500",
          },
          ipamConfig: [{ subnet: DEFAULT_BRIDGE_SUBNET }],
        },
        true,
      );
    }
    if (!have("host"))
      await this.createLocked(
        { ...base, ...ipam, enableIPv4: false, name: "host", driver: "host", options: {}, ipamConfig: [] },
        true,
      );
    if (!have("null"))
      await this.createLocked(
        { ...base, ...ipam, enableIPv4: false, name: "none", driver: "null", options: {}, ipamConfig: [] },
        true,
      );
  }

  private async createLocked(req: NetworkCreateRequest, predefined: boolean): Promise<NetworkRecord> {
    const ctx = this.ctx;
    if (!NAME.test(req.name)) {
      throw new InvalidParameterError(
        `invalid network name "${req.name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`,
      );
    }
    if ([...ctx.networks.values()].some((n) => n.name === req.name)) {
      throw new ConflictError(`network with name ${req.name} already exists`);
    }
    const driverName = req.driver || "bridge";
    const driver = ctx.driver(driverName);
    if (!predefined && SINGLETON_DRIVERS.has(driverName)) {
      throw new ForbiddenError(
        `only one instance of "${driverName === "null" ? "none" : driverName}" network is allowed`,
      );
    }
    if (req.ipamDriver && req.ipamDriver !== "default")
      throw new NotFoundError(`plugin "${req.ipamDriver}" not found`);
    if (Object.keys(req.ipamOptions).length > 0) {
      throw new InvalidParameterError(`unknown IPAM options: ${Object.keys(req.ipamOptions).join(", ")}`);
    }
    if (predefined && driverName !== "bridge" && req.ipamConfig.length > 0) {
      throw new InvalidParameterError(`the ${driverName} driver takes no IPAM configuration`);
    }
    if (!predefined && req.options[DEFAULT_BRIDGE] !== undefined) {
      throw new InvalidParameterError(
        `option ${DEFAULT_BRIDGE} is reserved for the predefined bridge network`,
      );
    }
    if (!req.enableIPv4 && !req.enableIPv6 && !SINGLETON_DRIVERS.has(driverName)) {
      throw new InvalidParameterError("a network must have IPv4 or IPv6 enabled");
    }

    const id = newId();
    const requests = this.poolRequests(req);
    const { options, device, internal } = driver.validate(
      { id, name: req.name, options: req.options, internal: req.internal, enableIPv6: req.enableIPv6 },
      [...ctx.networks.values()],
    );
    if (driver.scope === "global") {
      return this.createGlobal({
        id,
        name: req.name,
        driver: driverName,
        created: new Date().toISOString(),
        internal: req.internal || internal === true,
        attachable: req.attachable,
        enableIPv4: req.enableIPv4,
        enableIPv6: req.enableIPv6,
        userSubnets: req.ipamConfig.some((c) => c.subnet !== undefined),
        options,
        labels: req.labels,
        ipamOptions: req.ipamOptions,
        requests,
      });
    }
    const hostRoutes = await this.hostRoutes();
    const undo = new Undo();
    const pools: PoolRecord[] = [];
    try {
      for (const r of requests) {
        const pool: Pool = ctx.ipam.requestPool(id, r.family, r.req, hostRoutes);
        undo.push(() => ctx.ipam.releasePool(id, pool.subnet));
        pools.push({ ...pool });
      }
      const net: NetworkRecord = {
        id,
        name: req.name,
        driver: driverName,
        scope: driver.scope,
        created: new Date().toISOString(),
        internal: req.internal || internal === true,
        attachable: req.attachable,
        enableIPv4: req.enableIPv4 && !SINGLETON_DRIVERS.has(driverName),
        enableIPv6: req.enableIPv6,
        userSubnets: req.ipamConfig.some((c) => c.subnet !== undefined),
        options,
        labels: req.labels,
        ipamOptions: req.ipamOptions,
        pools,
        predefined,
        ...(device ? { device } : {}),
      };
      undo.push(() => driver.deleteNetwork(net));
      await driver.createNetwork(net);
      undo.push(async () => {
        await ctx.store.delete(`networks/${id}`);
        ctx.networks.delete(id);
      });
      await ctx.saveNetwork(net);
      this.applyFirewall();
      ctx.events.publish("network", "create", id, { name: net.name, type: net.driver });
      return net;
    } catch (err) {
      await undo.run((e) => log.error({ err: e, network: req.name }, "rollback of network create failed"));
      if (ctx.networks.size > 0) this.tryApplyFirewall();
      throw err;
    }
  }

  /**
   * A global network is made by compare-and-swap in the cluster store; every host (this one too)
   * adds it to its view, and makes its devices only when a container of its own joins.
   */
  private async createGlobal(draft: GlobalNetworkDraft): Promise<NetworkRecord> {
    const ctx = this.ctx;
    const cluster = requireCluster(ctx.cluster, draft.driver);
    const net = await cluster.createNetwork((registry) => completeGlobalNetwork(draft, registry));
    this.adoptGlobal(net);
    ctx.events.publish("network", "create", net.id, { name: net.name, type: net.driver });
    return net;
  }

  /**
   * A global network created on another host a moment ago may not have reached this host's watch
   * yet: before a reference to it is refused as unknown, the store is asked once.
   */
  async catchUp(refs: string[]): Promise<void> {
    const cluster = this.ctx.cluster;
    if (!cluster || refs.every((r) => this.tryFind(r))) return;
    for (const net of await cluster.readNetworks()) this.adoptGlobal(net);
  }

  /** Adds a global network from the cluster to this host's view (idempotent). */
  adoptGlobal(net: NetworkRecord): void {
    if (this.ctx.networks.has(net.id)) return;
    for (const p of net.pools) this.ctx.globalIpam.restorePool(net.id, p);
    this.ctx.networks.set(net.id, net);
  }

  /** Drops a global network from this host's view, with whatever devices it had here. */
  async forgetGlobal(id: string): Promise<void> {
    const net = this.ctx.networks.get(id);
    if (net?.scope !== "global") return;
    this.ctx.networks.delete(id);
    for (const p of net.pools) this.ctx.globalIpam.releasePool(id, p.subnet);
    await this.ctx.driver(net.driver).deleteNetwork(net);
    this.ctx.events.publish("network", "destroy", id, { name: net.name, type: net.driver });
  }

  /**
   * The local bridge that gives containers on overlays their egress and published ports (Docker's
   * docker_gwbridge): made on first use, masquerading, with no traffic between its containers.
   */
  async gatewayBridge(): Promise<NetworkRecord> {
    const have = [...this.ctx.networks.values()].find((n) => n.name === GATEWAY_BRIDGE);
    if (have) return have;
    return this.createLocked(
      {
        name: GATEWAY_BRIDGE,
        driver: "bridge",
        internal: false,
        attachable: false,
        enableIPv4: true,
        enableIPv6: false,
        options: { [BRIDGE_NAME]: GATEWAY_BRIDGE, [ENABLE_ICC]: "false", [ENABLE_MASQUERADE]: "true" },
        labels: {},
        ipamDriver: "default",
        ipamOptions: {},
        ipamConfig: [],
      },
      false,
    );
  }

  private tryApplyFirewall(): void {
    try {
      this.applyFirewall();
    } catch (err) {
      log.error({ err }, "cannot restore the firewall after a failed operation");
    }
  }

  /** Splits the request's IPAM config by family, adding default pools where none was given. */
  private poolRequests(req: NetworkCreateRequest): { family: 4 | 6; req: IpamConfigRequest }[] {
    if (SINGLETON_DRIVERS.has(req.driver)) return [];
    const out: { family: 4 | 6; req: IpamConfigRequest }[] = [];
    for (const c of req.ipamConfig) {
      if (!c.subnet) {
        if (c.ipRange || c.gateway || (c.auxAddresses && Object.keys(c.auxAddresses).length > 0)) {
          throw new InvalidParameterError("an --ip-range, --gateway or --aux-address needs a --subnet");
        }
        continue;
      }
      const family = familyOf(c.subnet);
      if (family === 6 && !req.enableIPv6) {
        throw new InvalidParameterError(
          `IPv6 subnet ${c.subnet} given, but IPv6 is not enabled on the network (use --ipv6)`,
        );
      }
      if (family === 4 && !req.enableIPv4) {
        throw new InvalidParameterError(`IPv4 subnet ${c.subnet} given, but IPv4 is disabled on the network`);
      }
      out.push({ family, req: c });
    }
    if (req.enableIPv4 && !out.some((r) => r.family === 4)) out.push({ family: 4, req: {} });
    if (req.enableIPv6 && !out.some((r) => r.family === 6)) out.push({ family: 6, req: {} });
    return out;
  }

  /**
   * Routes on the host that a default pool must not overlap (Docker's rule: explicit subnets may).
   * Routes through an adopted bridge count: they are the host's own, not a network's.
   */
  private async hostRoutes(): Promise<string[]> {
    const owned = new Set(
      [...this.ctx.networks.values()]
        .filter((n) => n.deviceCreated !== false)
        .map((n) => n.device)
        .filter(Boolean),
    );
    const routes = [...(await this.ctx.host.listRoutes(4)), ...(await this.ctx.host.listRoutes(6))];
    return routes.filter((r) => r.dst !== "default" && !(r.dev && owned.has(r.dev))).map((r) => r.dst);
  }

  remove(ref: string): Promise<void> {
    return this.ctx.lock.run(async () => {
      const net = this.find(ref);
      if (net.predefined) {
        throw new ForbiddenError(`${net.name} is a pre-defined network and cannot be removed`);
      }
      const active = this.ctx.endpointsOn(net.id);
      if (active.length > 0) {
        const names = active
          .map((e) => this.ctx.containers.get(e.containerId)?.name ?? e.containerId)
          .join(", ");
        throw new ForbiddenError(
          `error while removing network: network ${net.name} id ${net.id} has active endpoints (${names})`,
        );
      }
      await this.removeLocked(net);
    });
  }

  /** Services whose tasks join the network, or that have a virtual IP on it (`ingress`, when they publish). */
  private serviceUsers(net: NetworkRecord): string[] {
    return [...(this.ctx.cluster?.services.values() ?? [])]
      .filter((s) => s.networks.includes(net.id) || net.id in s.vips)
      .map((s) => s.name);
  }

  private async removeLocked(net: NetworkRecord): Promise<void> {
    const ctx = this.ctx;
    if (net.scope === "global") {
      const cluster = requireCluster(ctx.cluster, net.driver);
      const services = this.serviceUsers(net);
      if (services.length > 0) {
        throw new ForbiddenError(
          `error while removing network: network ${net.name} id ${net.id} is in use by service ${services.join(", ")}`,
        );
      }
      const remote = cluster.endpointsOn(net.id);
      if (remote.length > 0) {
        const names = remote.map((e) => `${e.containerName} on ${e.host}`).join(", ");
        throw new ForbiddenError(
          `error while removing network: network ${net.name} id ${net.id} has active endpoints (${names})`,
        );
      }
      await cluster.deleteNetwork(net.id);
      await this.forgetGlobal(net.id);
      return;
    }
    // The store goes first: if the daemon dies after this line, start-up finds the bridge without
    // its record and removes it as a leftover.
    await ctx.store.delete(`networks/${net.id}`);
    ctx.networks.delete(net.id);
    this.tryApplyFirewall();
    await ctx.driver(net.driver).deleteNetwork(net);
    for (const p of net.pools) ctx.ipam.releasePool(net.id, p.subnet);
    ctx.events.publish("network", "destroy", net.id, { name: net.name, type: net.driver });
  }

  /** Removes every user-defined network without endpoints; returns the names removed. */
  prune(filter: (n: NetworkRecord) => boolean): Promise<string[]> {
    return this.ctx.lock.run(async () => {
      const removed: string[] = [];
      for (const net of this.list()) {
        if (net.predefined || !filter(net) || this.ctx.endpointsOn(net.id).length > 0) continue;
        if (this.serviceUsers(net).length > 0) continue;
        await this.removeLocked(net);
        removed.push(net.name);
      }
      return removed;
    });
  }

  describe(net: NetworkRecord): string {
    return `${net.name} (${shortId(net.id)})`;
  }
}
