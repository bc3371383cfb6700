import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Cluster } from "../cluster/cluster.js";
import type { ClusterEndpoint } from "../cluster/types.js";
import { DnsServer } from "../dns/server.js";
import { BridgeDriver } from "../drivers/bridge/bridge.js";
import type { Driver } from "../drivers/driver.js";
import { NoOpDriver } from "../drivers/host/host.js";
import { IpvlanDriver } from "../drivers/ipvlan/ipvlan.js";
import { MacvlanDriver } from "../drivers/macvlan/macvlan.js";
import type { UnderlayContext } from "../drivers/macvlan/underlay.js";
import { type OverlayContext, OverlayDriver } from "../drivers/overlay/overlay.js";
import { Firewall } from "../firewall/firewall.js";
import { ImageStore } from "../images/store.js";
import { Ipam } from "../ipam/index.js";
import { Netlink } from "../kernel/netlink.js";
import { runNft } from "../kernel/nft.js";
import { writeSysctl } from "../kernel/sysctl.js";
import { PortAllocator } from "../ports/allocator.js";
import { FileStore } from "../store/file-store.js";
import type { Store } from "../store/store.js";
import { ClusterOps } from "./cluster-ops.js";
import { Containers } from "./containers.js";
import { EngineContext, type EnginePaths } from "./context.js";
import { EngineResolverView } from "./dns-view.js";
import { EventLog } from "./events.js";
import { newGlobalIpam } from "./global-networks.js";
import { DEFAULT_BRIDGE_SUBNET, Networks } from "./networks.js";
import { reconcile } from "./reconcile.js";
import { Sandboxes } from "./sandboxes.js";
import { ServiceLb } from "./service-lb.js";
import { Services } from "./services.js";

export interface EngineOptions extends EnginePaths {
  /** upstream DNS servers for containers without --dns (the daemon's --dns) */
  dns: string[];
  store?: Store;
  /** this host's name in a cluster (default: the machine's host name) */
  nodeName?: string;
  /** `etcd://HOST:PORT`: follow that etcd (the daemon's --cluster-store) */
  clusterStore?: string;
  advertiseAddr?: string;
}

/** Docker's default address pools: 172.17/16 for the default bridge, 172.18–31/16, then 192.168/16 in /20s. */
export const DEFAULT_POOLS4 = [
  ...Array.from({ length: 15 }, (_, i) => ({ base: `172.${17 + i}.0.0/16`, size: 16 })),
  { base: "192.168.0.0/16", size: 20 },
];

/** A ULA /48 of this daemon's own, derived from its data root, split into /64s (as Docker 27+ does). */
function defaultPool6(dataRoot: string): { base: string; size: number } {
  const h = createHash("sha256").update(dataRoot).digest();
  const hex = (i: number) => (h[i] ?? 0).toString(16).padStart(2, "0");
  return { base: `fd${hex(0)}:${hex(1)}${hex(2)}:${hex(3)}${hex(4)}::/48`, size: 64 };
}

/** The engine: everything the API can ask for, built on one context. */
export class Engine {
  private constructor(
    readonly ctx: EngineContext,
    readonly networks: Networks,
    readonly containers: Containers,
    readonly images: ImageStore,
    private readonly dns: DnsServer,
    readonly cluster: ClusterOps,
    /** services' VIPs and routing mesh; the services layer reserves mesh ports through it */
    readonly serviceLb: ServiceLb,
    readonly services: Services,
  ) {}

  static async open(o: EngineOptions): Promise<Engine> {
    mkdirSync(o.dataRoot, { recursive: true, mode: 0o700 });
    mkdirSync(o.execRoot, { recursive: true, mode: 0o755 });
    const store = o.store ?? FileStore.open(join(o.dataRoot, "store"));
    const host = Netlink.open();
    // The underlay drivers' links live only inside sandboxes; ctx is read when they are called.
    const underlay: UnderlayContext = {
      sandboxOf: (ep) => ctx.containers.get(ep.containerId)?.sandboxPath || undefined,
      networks: () => ctx.networks.values(),
    };
    const overlay: OverlayContext = {
      advertiseAddr: (): string | undefined => ctx.cluster?.advertiseAddr,
      remoteEndpoints: (networkId: string): ClusterEndpoint[] => {
        const cluster: Cluster | undefined = ctx.cluster;
        return cluster?.endpointsOn(networkId).filter((e) => e.host !== cluster.nodeName) ?? [];
      },
    };
    const drivers = new Map<string, Driver>([
      ["bridge", new BridgeDriver(host)],
      ["host", new NoOpDriver("host")],
      ["null", new NoOpDriver("null")],
      ["macvlan", new MacvlanDriver(host, underlay)],
      ["ipvlan", new IpvlanDriver(host, underlay)],
      ["overlay", new OverlayDriver(host, overlay)],
    ]);
    const ipam = new Ipam({
      defaultPools4: DEFAULT_POOLS4,
      defaultPool6: defaultPool6(o.dataRoot),
      reserved: [DEFAULT_BRIDGE_SUBNET],
    });
    const ctx = new EngineContext(
      { dataRoot: o.dataRoot, execRoot: o.execRoot },
      store,
      ipam,
      newGlobalIpam(),
      drivers,
      new Firewall(runNft),
      host,
      new EventLog(),
      o.dns,
      new PortAllocator(),
    );
    const networks = new Networks(ctx);
    const sandboxes = new Sandboxes(ctx.netnsDir());
    const dns = new DnsServer(new EngineResolverView(ctx));
    const images = ImageStore.open(join(o.dataRoot, "images"));
    const containers = new Containers(ctx, networks, sandboxes, dns, images);
    const cluster = new ClusterOps(ctx, networks, {
      nodeName: o.nodeName ?? hostname(),
      ...(o.clusterStore ? { clusterStore: o.clusterStore } : {}),
      ...(o.advertiseAddr ? { advertiseAddr: o.advertiseAddr } : {}),
    });
    const serviceLb = new ServiceLb(ctx, networks, sandboxes);
    serviceLb.listen();
    const services = new Services(ctx, networks, containers, images, serviceLb);
    services.listen();
    writeSysctl("net.ipv4.ip_forward", "1");
    await cluster.connectAtStart();
    await ctx.lock.run(() => reconcile(ctx, networks, containers));
    await cluster.followAtStart();
    await serviceLb.start();
    if ([...ctx.networks.values()].some((n) => n.enableIPv6))
      writeSysctl("net.ipv6.conf.all.forwarding", "1");
    return new Engine(ctx, networks, containers, images, dns, cluster, serviceLb, services);
  }

  /** Stops following containers and closes sockets; containers and kernel state stay as they are. */
  async close(): Promise<void> {
    this.services.close();
    this.dns.close();
    await this.ctx.lock.run(async () => {
      await this.cluster.close();
      this.ctx.host.close();
      await this.ctx.store.close();
    });
  }
}
