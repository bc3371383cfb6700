import type { Cluster, ClusterListener, ServiceChange } from "../cluster/cluster.js";
import type { ClusterEndpoint } from "../cluster/types.js";
import { OverlayDriver } from "../drivers/overlay/overlay.js";
import { log } from "../log.js";
import type { EngineContext } from "./context.js";
import { clusterEndpoint } from "./global-networks.js";
import { INGRESS_ENDPOINT_NAME, INGRESS_SANDBOX, ingressClusterEndpoint } from "./ingress-sandbox.js";
import type { Networks } from "./networks.js";

/**
 * Keeps this host's view in step with the cluster store: global networks appear and go, remote
 * endpoints become forwarding and neighbour entries on this host's overlay devices, other hosts'
 * address claims are marked used in the global IPAM. Changes are applied under the engine's lock,
 * one at a time, between the engine's own operations.
 */
export class ClusterSync implements ClusterListener {
  constructor(
    private readonly ctx: EngineContext,
    private readonly networks: Networks,
  ) {}

  /** Builds the global part of the view from the cluster's mirror (start-up or joining). */
  loadView(cluster: Cluster): void {
    for (const net of cluster.networks.values()) this.networks.adoptGlobal(net);
    for (const [key, claim] of cluster.addresses) {
      if (claim.host === cluster.nodeName) continue;
      const [networkId = "", address = ""] = key.split("/");
      this.markUsed(networkId, address);
    }
  }

  /**
   * Publishes this host's endpoints on global networks and claims their addresses, under the
   * current lease (after a restart or a lost lease). An address another host took meanwhile is
   * reported, not fought over.
   */
  async publishLocal(cluster: Cluster): Promise<void> {
    for (const ep of this.ctx.endpoints.values()) {
      const net = this.ctx.networks.get(ep.networkId);
      const c = this.ctx.containers.get(ep.containerId);
      const ingress = ep.containerId === INGRESS_SANDBOX;
      if (net?.scope !== "global" || (!c && !ingress)) continue;
      for (const address of [ep.ipv4, ep.ipv6]) {
        if (address && !(await cluster.claimAddress(net.id, address, ep.id))) {
          log.error(
            { container: c?.name ?? INGRESS_ENDPOINT_NAME, network: net.name, address },
            "another host took this container's address while this host was away",
          );
        }
      }
      await cluster.publishEndpoint(
        c
          ? clusterEndpoint(cluster, ep, c)
          : ingressClusterEndpoint(cluster.nodeName, cluster.advertiseAddr, ep),
      );
    }
  }

  private markUsed(networkId: string, address: string): void {
    const net = this.ctx.networks.get(networkId);
    const pool = net?.pools.find((p) => p.family === (address.includes(":") ? 6 : 4));
    if (!net || !pool) return;
    try {
      this.ctx.globalIpam.restoreAddress(networkId, pool.subnet, address);
    } catch {
      // already marked: this host picked it and lost the race, or heard of it twice
    }
  }

  /** Drops a global network from the view (leaving the cluster). */
  async forget(id: string): Promise<void> {
    await this.networks.forgetGlobal(id);
  }

  private overlay(): OverlayDriver | undefined {
    const d = this.ctx.drivers.get("overlay");
    return d instanceof OverlayDriver ? d : undefined;
  }

  private self(): string | undefined {
    return this.ctx.cluster?.nodeName;
  }

  private run(what: string, fn: () => Promise<void> | void): void {
    void this.ctx.lock
      .run(async () => {
        await fn();
      })
      .catch((err) => log.error({ err }, `cluster change not applied: ${what}`));
  }

  network(kind: "put" | "delete", id: string, net: import("./types.js").NetworkRecord | undefined): void {
    this.run(`network ${id}`, async () => {
      if (kind === "put" && net) this.networks.adoptGlobal(net);
      else if (kind === "delete") await this.networks.forgetGlobal(id);
    });
  }

  endpoint(kind: "put" | "delete", e: ClusterEndpoint): void {
    if (e.host === this.self()) return;
    this.run(`endpoint ${e.id}`, async () => {
      const net = this.ctx.networks.get(e.networkId);
      const overlay = this.overlay();
      if (net?.driver !== "overlay" || !overlay) return;
      if (kind === "put") await overlay.addPeer(net, e);
      else await overlay.removePeer(net, e);
    });
  }

  address(
    kind: "put" | "delete",
    networkId: string,
    address: string,
    claim: { host: string } | undefined,
  ): void {
    if (kind === "put" && claim?.host === this.self()) return;
    this.run(`address ${address}`, () => {
      if (kind === "put") {
        this.markUsed(networkId, address);
        return;
      }
      const mine = [...this.ctx.endpoints.values()].some(
        (e) => e.networkId === networkId && (e.ipv4 === address || e.ipv6 === address),
      );
      const net = this.ctx.networks.get(networkId);
      const pool = net?.pools.find((p) => p.family === (address.includes(":") ? 6 : 4));
      if (!mine && pool) this.ctx.globalIpam.releaseAddress(networkId, pool.subnet, address);
    });
  }

  services(change: ServiceChange): void {
    for (const hook of this.ctx.serviceHooks) hook(change);
  }

  leaseRenewed(): void {
    this.run("lease renewed", async () => {
      const cluster = this.ctx.cluster;
      if (cluster) await this.publishLocal(cluster);
    });
  }
}
