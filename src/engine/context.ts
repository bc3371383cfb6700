import { join } from "node:path";
import type { Cluster, ServiceChange } from "../cluster/cluster.js";
import type { Driver } from "../drivers/driver.js";
import { NotFoundError } from "../errors.js";
import type { Firewall } from "../firewall/firewall.js";
import type { FirewallPort } from "../firewall/model.js";
import type { Ipam } from "../ipam/index.js";
import type { Netlink } from "../kernel/netlink.js";
import type { PortAllocator } from "../ports/allocator.js";
import type { Store } from "../store/store.js";
import type { EventLog } from "./events.js";
import { Lock } from "./lock.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord } from "./types.js";

export interface EnginePaths {
  dataRoot: string;
  execRoot: string;
}

/**
 * What the engine's parts share: dependencies and the in-memory view of the store. The maps are
 * the source of truth while the daemon runs; every change is written to the store before the
 * operation returns.
 */
export class EngineContext {
  readonly lock = new Lock();
  readonly networks = new Map<string, NetworkRecord>();
  readonly containers = new Map<string, ContainerRecord>();
  readonly endpoints = new Map<string, EndpointRecord>();
  /** this host's seat in a cluster; undefined while the host is in none */
  cluster: Cluster | undefined;
  /**
   * The services layer's ears: called (outside the engine's lock) on every change of services,
   * tasks, task statuses or the scheduler's leader, and when this host joins or leaves a cluster.
   */
  readonly serviceHooks = new Set<(change: ServiceChange | { what: "joined" } | { what: "left" }) => void>();
  /** The routing mesh's published ports on this host, DNATed to the ingress sandbox (engine/service-lb.ts). */
  ingressPorts: FirewallPort[] = [];

  constructor(
    readonly paths: EnginePaths,
    readonly store: Store,
    readonly ipam: Ipam,
    /** pools and addresses of global networks, mirrored from the cluster store */
    readonly globalIpam: Ipam,
    readonly drivers: Map<string, Driver>,
    readonly firewall: Firewall,
    readonly host: Netlink,
    readonly events: EventLog,
    readonly dns: string[],
    readonly ports: PortAllocator,
  ) {}

  ipamOf(net: NetworkRecord): Ipam {
    return net.scope === "global" ? this.globalIpam : this.ipam;
  }

  driver(name: string): Driver {
    const d = this.drivers.get(name);
    if (!d) throw new NotFoundError(`plugin "${name}" not found`);
    return d;
  }

  network(id: string): NetworkRecord {
    const n = this.networks.get(id);
    if (!n) throw new NotFoundError(`network ${id} not found`);
    return n;
  }

  endpointsOf(containerId: string): EndpointRecord[] {
    return [...this.endpoints.values()]
      .filter((e) => e.containerId === containerId)
      .sort((a, b) => a.order - b.order);
  }

  endpointsOn(networkId: string): EndpointRecord[] {
    return [...this.endpoints.values()].filter((e) => e.networkId === networkId);
  }

  netnsDir(): string {
    return join(this.paths.execRoot, "netns");
  }

  containerRunDir(id: string): string {
    return join(this.paths.execRoot, "containers", id);
  }

  containerDataDir(id: string): string {
    return join(this.paths.dataRoot, "containers", id);
  }

  async saveNetwork(n: NetworkRecord): Promise<void> {
    await this.store.put(`networks/${n.id}`, n);
    this.networks.set(n.id, n);
  }

  async saveContainer(c: ContainerRecord): Promise<void> {
    await this.store.put(`containers/${c.id}`, c);
    this.containers.set(c.id, c);
  }

  async saveEndpoint(e: EndpointRecord): Promise<void> {
    await this.store.put(`endpoints/${e.id}`, e);
    this.endpoints.set(e.id, e);
  }

  async dropEndpoint(id: string): Promise<void> {
    await this.store.delete(`endpoints/${id}`);
    this.endpoints.delete(id);
  }
}
