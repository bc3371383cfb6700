import { join } from "node:path";
import { bridgeSettings } from "../drivers/bridge/bridge.js";
import type { SandboxHandle } from "../drivers/driver.js";
import { ConflictError } from "../errors.js";
import { macFromIPv4, NoAvailableAddressError, subnetContains } from "../ipam/index.js";
import { Netlink } from "../kernel/netlink.js";
import { createNetns, deleteNetns, isNetnsMounted } from "../kernel/netns.js";
import { writeSysctl } from "../kernel/sysctl.js";
import { log } from "../log.js";
import type { EngineContext } from "./context.js";
import { requireCluster } from "./global-networks.js";
import { newId } from "./ids.js";
import type { Networks } from "./networks.js";
import type { EndpointRecord, NetworkRecord } from "./types.js";
import { Undo } from "./undo.js";

/** The containerId of the ingress sandbox's endpoints, as Docker names it in `network inspect ingress`. */
export const INGRESS_SANDBOX = "ingress-sbox";
/** Its name as other hosts see its endpoint (Docker's). */
export const INGRESS_ENDPOINT_NAME = "ingress-endpoint";

const CLAIM_ATTEMPTS = 256;

/**
 * The routing mesh's sandbox on this host (Docker's ingress-sbox): a network namespace ctnet owns,
 * with an endpoint on the `ingress` overlay (eth0) and one on the gateway bridge (eth1, default
 * route). The host DNATs mesh ports to its gateway-bridge address; its own `ctnet_lb` table sends
 * them on to the tasks. Its endpoints are ordinary endpoint records (containerId INGRESS_SANDBOX),
 * so addresses, leftover links, overlay devices and the firewall treat them like a container's.
 * The namespace lives outside the sandboxes' directory, which start-up sweeps of unused ones.
 */
export class IngressSandbox {
  readonly path: string;
  private netlink: Netlink | undefined;
  /** the ingress network it was last found complete on, in this run of the daemon */
  private readyOn: string | undefined;

  constructor(
    private readonly ctx: EngineContext,
    private readonly networks: Networks,
  ) {
    this.path = join(ctx.paths.execRoot, "ingress_sbox");
  }

  endpoints(): EndpointRecord[] {
    return this.ctx.endpointsOf(INGRESS_SANDBOX);
  }

  /** Where the host forwards mesh ports: the sandbox's address on the gateway bridge, and that bridge. */
  gateway(): { address: string; bridge: string } | undefined {
    if (!this.readyOn) return undefined;
    const ep = this.endpoints().find((e) => e.gateway);
    const bridge = ep && this.ctx.networks.get(ep.networkId)?.device;
    return ep?.ipv4 && bridge ? { address: ep.ipv4, bridge } : undefined;
  }

  /**
   * Makes the sandbox, or repairs what a crash or a reboot left of it (the first call of a run
   * checks everything; later ones return at once). Runs under the engine's lock.
   */
  async ensure(ingress: NetworkRecord): Promise<void> {
    if (this.readyOn === ingress.id && isNetnsMounted(this.path)) return;
    this.readyOn = undefined;
    if (!isNetnsMounted(this.path)) {
      this.closeNetlink();
      // An unmounted file left by a reboot would make the create fail.
      deleteNetns(this.path);
      createNetns(this.path);
    }
    const sandbox = this.handle();
    await sandbox.netlink.setUp("lo");
    writeSysctl("net.ipv4.ip_forward", "1", this.path);
    const gw = await this.networks.gatewayBridge();
    for (const ep of this.endpoints())
      if (ep.networkId !== ingress.id && ep.networkId !== gw.id) await this.release(ep, true);
    await this.endpoint(ingress, sandbox, false);
    await this.endpoint(gw, sandbox, true);
    this.readyOn = ingress.id;
  }

  /** Takes the sandbox down: the namespace (its veths go with it), then its endpoints' addresses and records. */
  async remove(): Promise<void> {
    this.readyOn = undefined;
    this.closeNetlink();
    deleteNetns(this.path);
    for (const ep of this.endpoints()) await this.release(ep, false);
  }

  /** Whether anything of the sandbox exists (a namespace or an endpoint record). */
  exists(): boolean {
    return isNetnsMounted(this.path) || this.endpoints().length > 0;
  }

  private handle(): SandboxHandle {
    this.netlink ??= Netlink.open(this.path);
    return { path: this.path, netlink: this.netlink };
  }

  private closeNetlink(): void {
    this.netlink?.close();
    this.netlink = undefined;
  }

  private async endpoint(net: NetworkRecord, sandbox: SandboxHandle, gateway: boolean): Promise<void> {
    const ctx = this.ctx;
    const driver = ctx.driver(net.driver);
    const have = this.endpoints().find((e) => e.networkId === net.id);
    if (have) {
      if (!(await driver.endpointPresent(net, have, sandbox))) {
        log.warn({ network: net.name }, "ingress sandbox: endpoint missing, making it again");
        await sandbox.netlink.deleteLink(have.ifname);
        await driver.join(net, have, sandbox, gateway);
      }
      return;
    }
    const undo = new Undo();
    try {
      const id = newId();
      const ipv4 = await this.claim(net, id);
      undo.push(() => this.releaseAddress(net, ipv4));
      const ep: EndpointRecord = {
        id,
        networkId: net.id,
        containerId: INGRESS_SANDBOX,
        ifname: gateway ? "eth1" : "eth0",
        hostIfname: `veth${id.slice(0, 11)}`,
        mac: macFromIPv4(ipv4),
        ipv4,
        aliases: [],
        order: gateway ? 1 : 0,
        ...(gateway ? { gateway } : {}),
      };
      await ctx.saveEndpoint(ep);
      undo.push(() => ctx.dropEndpoint(ep.id));
      // With ICC off (the gateway bridge) the port must be in the bridge table's set before it joins.
      if (tracksPorts(net)) {
        undo.push(() => this.networks.applyFirewall());
        this.networks.applyFirewall();
      }
      await driver.join(net, ep, sandbox, gateway);
      undo.push(() => driver.leave(net, ep));
      await this.publish(net, ep);
    } catch (err) {
      await undo.run((e) => log.error({ err: e }, "rollback of the ingress sandbox's endpoint failed"));
      throw err;
    }
  }

  private async publish(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    if (net.scope !== "global") return;
    const cluster = requireCluster(this.ctx.cluster, net.driver);
    await cluster.publishEndpoint(ingressClusterEndpoint(cluster.nodeName, cluster.advertiseAddr, ep));
  }

  /** An IPv4 address of the network, granted by the cluster too on a global one. */
  private async claim(net: NetworkRecord, endpointId: string): Promise<string> {
    const ipam = this.ctx.ipamOf(net);
    const pool = net.pools.find((p) => p.family === 4);
    if (!pool) throw NoAvailableAddressError.forNetwork(4, net.name, net.id);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const address = ipam.requestAddress(net.id, pool.subnet);
      if (net.scope !== "global") return address;
      const cluster = requireCluster(this.ctx.cluster, net.driver);
      // A refused address stays marked used here: another host holds it.
      if (await cluster.claimAddress(net.id, address, endpointId)) return address;
    }
    throw new ConflictError(`no address of network ${net.name} could be claimed for the ingress sandbox`);
  }

  private async releaseAddress(net: NetworkRecord, address: string): Promise<void> {
    const pool = net.pools.find((p) => subnetContains(p.subnet, address));
    if (pool) this.ctx.ipamOf(net).releaseAddress(net.id, pool.subnet, address);
    if (net.scope === "global") await this.ctx.cluster?.releaseAddress(net.id, address);
  }

  /** An endpoint's record, address and cluster entry go; `kernel` also removes its veth now. */
  private async release(ep: EndpointRecord, kernel: boolean): Promise<void> {
    const net = this.ctx.networks.get(ep.networkId);
    if (net) {
      const driver = this.ctx.driver(net.driver);
      if (kernel) await driver.leave(net, ep);
      if (net.scope === "global") await this.ctx.cluster?.withdrawEndpoint(ep);
      if (ep.ipv4) await this.releaseAddress(net, ep.ipv4);
      if (driver.networkIdle && !this.ctx.endpointsOn(net.id).some((e) => e.id !== ep.id))
        await driver.networkIdle(net);
    }
    await this.ctx.dropEndpoint(ep.id);
    if (net && tracksPorts(net)) this.networks.applyFirewall();
  }
}

/** Only bridges with ICC off name their ports in the firewall. */
function tracksPorts(net: NetworkRecord): boolean {
  return net.driver === "bridge" && !bridgeSettings(net).icc;
}

/** The ingress sandbox's endpoint as the other hosts need it, to reach it over the overlay. */
export function ingressClusterEndpoint(host: string, hostAddr: string, ep: EndpointRecord) {
  return {
    id: ep.id,
    networkId: ep.networkId,
    host,
    hostAddr,
    containerId: INGRESS_SANDBOX,
    containerName: INGRESS_ENDPOINT_NAME,
    aliases: [],
    mac: ep.mac,
    ...(ep.ipv4 ? { ipv4: ep.ipv4 } : {}),
  };
}
