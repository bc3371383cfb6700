import type { ClusterEndpoint } from "../../cluster/types.js";
import { VXLAN_ID_OPTION } from "../../cluster/types.js";
import type { EndpointRecord, NetworkRecord } from "../../engine/types.js";
import { InvalidParameterError, NotSupportedError } from "../../errors.js";
import type { Netlink } from "../../kernel/netlink.js";
import { writeSysctl } from "../../kernel/sysctl.js";
import { log } from "../../log.js";
import { networkAlias } from "../aliases.js";
import type { Driver, NetworkSpec, SandboxHandle } from "../driver.js";
import { parseMtuOption, rejectUnknownOptions } from "../options.js";
import { joinVeth, vethPresent } from "../veth.js";

export const OVERLAY_MTU = "com.docker.network.driver.mtu";
const ENCRYPTED = "encrypted";
const KNOWN = [OVERLAY_MTU, VXLAN_ID_OPTION, ENCRYPTED] as const;
/** IANA's VXLAN port, as Docker uses it. */
export const VXLAN_PORT = 4789;
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers. */
const VXLAN_OVERHEAD = 50;
/** The first VNI Docker gives a user's overlay network. */
export const FIRST_VNI = 4097;

export const overlayBridge = (vni: number) => `ctov${vni}`;
export const overlayVxlan = (vni: number) => `ctvx${vni}`;

export function vniOf(net: NetworkRecord): number {
  return Number(net.options[VXLAN_ID_OPTION]);
}

/** What the driver needs from the cluster: where this host is, and where the network's other endpoints are. */
export interface OverlayContext {
  /** this host's underlay address; undefined when the host is in no cluster */
  advertiseAddr(): string | undefined;
  remoteEndpoints(networkId: string): ClusterEndpoint[];
}

/**
 * Overlay networks: on each host that has containers on the network, a Linux bridge and a VXLAN
 * device (VNI from the cluster, UDP 4789, sent from the host's advertise address). The devices have
 * no IP address, so the host routes nothing into or between overlays; containers reach the world
 * through their endpoint on the gateway bridge. Remote containers are programmed statically — a
 * forwarding entry (MAC → remote host) and a neighbour entry (IP → MAC, answered by the VXLAN
 * device's ARP proxy) each — so nothing is learnt or flooded.
 */
export class OverlayDriver implements Driver {
  readonly name = "overlay";
  readonly scope = "global" as const;

  constructor(
    private readonly host: Netlink,
    private readonly ctx: OverlayContext,
  ) {}

  validate(spec: NetworkSpec): { options: Record<string, string> } {
    rejectUnknownOptions(this.name, spec.options, KNOWN);
    if (spec.options[ENCRYPTED] !== undefined) {
      throw new NotSupportedError(
        "encrypted overlay networks need IPsec ESP, which this kernel lacks (CONFIG_INET_ESP, CONFIG_XFRM_USER)",
      );
    }
    parseMtuOption(OVERLAY_MTU, spec.options[OVERLAY_MTU]);
    const vni = spec.options[VXLAN_ID_OPTION];
    if (vni !== undefined && !/^\d+$/.test(vni)) {
      throw new InvalidParameterError(
        `invalid value for option ${VXLAN_ID_OPTION}: "${vni}" is not a VXLAN id`,
      );
    }
    if (vni !== undefined && (Number(vni) < 1 || Number(vni) > 0xffffff)) {
      throw new InvalidParameterError(`VXLAN id ${vni} is out of range (1-16777215)`);
    }
    return { options: { ...spec.options } };
  }

  /** Nothing until a container of this host joins: hosts without containers on it carry no devices. */
  async createNetwork(): Promise<void> {}

  async deleteNetwork(net: NetworkRecord): Promise<void> {
    const vni = vniOf(net);
    for (const name of [overlayVxlan(vni), overlayBridge(vni)]) {
      const link = await this.host.getLink(name);
      if (link && link.alias === networkAlias(net.id)) await this.host.deleteLink(name);
    }
  }

  /** The last endpoint of this host left: the devices go, and their entries with them. */
  async networkIdle(net: NetworkRecord): Promise<void> {
    await this.deleteNetwork(net);
  }

  private async underlay(): Promise<{ addr: string; dev: string; mtu: number }> {
    const addr = this.ctx.advertiseAddr();
    if (!addr) {
      throw new NotSupportedError(
        "overlay networks need a cluster: run `ctnet cluster init` or `ctnet cluster join` first",
      );
    }
    const held = (await this.host.listAddresses()).find((a) => a.cidr.startsWith(`${addr}/`));
    if (!held)
      throw new InvalidParameterError(`the advertise address ${addr} is on no interface of this host`);
    const link = await this.host.getLink(held.ifname);
    return { addr, dev: held.ifname, mtu: link?.mtu ?? 1500 };
  }

  private async mtu(net: NetworkRecord): Promise<number> {
    return (
      parseMtuOption(OVERLAY_MTU, net.options[OVERLAY_MTU]) ?? (await this.underlay()).mtu - VXLAN_OVERHEAD
    );
  }

  /** Makes the bridge and VXLAN device if missing, and programs every remote endpoint known now. */
  private async ensureDevices(net: NetworkRecord): Promise<void> {
    const vni = vniOf(net);
    const bridge = overlayBridge(vni);
    const vxlan = overlayVxlan(vni);
    const alias = networkAlias(net.id);
    const have = await this.host.getLink(vxlan);
    if (have?.alias === alias && have.up && (await this.host.getLink(bridge))?.index === have.masterIndex)
      return;
    const underlay = await this.underlay();
    const mtu = await this.mtu(net);
    if (!(await this.host.getLink(bridge))) await this.host.createBridge({ name: bridge, mtu, alias });
    writeSysctl(`net/ipv6/conf/${bridge}/disable_ipv6`, "1");
    if (!have) {
      await this.host.createVxlan({
        name: vxlan,
        vni,
        local: underlay.addr,
        dev: underlay.dev,
        port: VXLAN_PORT,
        mtu,
        alias,
      });
    }
    await this.host.setMaster(vxlan, bridge);
    await this.host.setUp(vxlan);
    await this.host.setUp(bridge);
    for (const e of this.ctx.remoteEndpoints(net.id)) await this.addPeer(net, e);
  }

  async join(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<void> {
    await this.ensureDevices(net);
    await joinVeth(this.host, net, ep, sandbox, overlayBridge(vniOf(net)), await this.mtu(net));
  }

  async leave(_net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.host.deleteLink(ep.hostIfname);
  }

  async endpointPresent(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<boolean> {
    // Reconcile asks this of every endpoint: the network's devices and remote entries, which no
    // endpoint check would notice missing (a lost VXLAN device leaves the veths intact), are
    // repaired here first.
    await this.ensureDevices(net);
    return vethPresent(this.host, net, ep, sandbox, overlayBridge(vniOf(net)));
  }

  /** The default route comes from the gateway bridge, never from an overlay. */
  async setDefaultRoute(): Promise<void> {}

  /** Programs a remote endpoint, if this host has devices for its network. */
  async addPeer(net: NetworkRecord, e: ClusterEndpoint): Promise<void> {
    const vxlan = overlayVxlan(vniOf(net));
    if (!(await this.host.getLink(vxlan))) return;
    await this.host.addFdb(vxlan, e.mac, e.hostAddr);
    for (const ip of [e.ipv4, e.ipv6]) if (ip) await this.host.addNeighbour(vxlan, ip, e.mac);
  }

  async removePeer(net: NetworkRecord, e: ClusterEndpoint): Promise<void> {
    const vxlan = overlayVxlan(vniOf(net));
    if (!(await this.host.getLink(vxlan))) return;
    try {
      await this.host.delFdb(vxlan, e.mac, e.hostAddr);
      for (const ip of [e.ipv4, e.ipv6]) if (ip) await this.host.delNeighbour(vxlan, ip);
    } catch (err) {
      log.warn({ err, endpoint: e.id }, "cannot remove a remote endpoint's entries");
    }
  }
}
