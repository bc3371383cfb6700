import type { EndpointRecord, NetworkRecord } from "../../engine/types.js";
import { ConflictError } from "../../errors.js";
import { randomMac, withPrefix } from "../../ipam/index.js";
import type { Netlink } from "../../kernel/netlink.js";
import { writeSysctl } from "../../kernel/sysctl.js";
import { addressEndpoint, hasIPv6 } from "../addressing.js";
import type { Driver, NetworkSpec, SandboxHandle } from "../driver.js";
import { parseBoolOption, parseMtuOption, rejectUnknownOptions, validateIfname } from "../options.js";

export const BRIDGE_NAME = "com.docker.network.bridge.name";
export const ENABLE_ICC = "com.docker.network.bridge.enable_icc";
export const ENABLE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade";
export const HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4";
export const DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge";
export const MTU = "com.docker.network.driver.mtu";

const KNOWN = [BRIDGE_NAME, ENABLE_ICC, ENABLE_MASQUERADE, HOST_BINDING_IPV4, DEFAULT_BRIDGE, MTU] as const;

/** Alias written on every link ctnet makes, so that start-up can tell its leftovers from others' links. */
export const networkAlias = (id: string) => `ctnet:net:${id}`;
export const endpointAlias = (id: string) => `ctnet:ep:${id}`;

export interface BridgeSettings {
  icc: boolean;
  masquerade: boolean;
  mtu?: number;
}

export function bridgeSettings(net: NetworkRecord): BridgeSettings {
  return {
    icc: parseBoolOption(ENABLE_ICC, net.options[ENABLE_ICC], true),
    masquerade: parseBoolOption(ENABLE_MASQUERADE, net.options[ENABLE_MASQUERADE], true),
    mtu: parseMtuOption(MTU, net.options[MTU]),
  };
}

/** Linux bridge networks: one bridge per network, one veth pair per endpoint. */
export class BridgeDriver implements Driver {
  readonly name = "bridge";
  readonly scope = "local" as const;

  constructor(private readonly host: Netlink) {}

  validate(
    spec: NetworkSpec,
    existing: NetworkRecord[],
  ): { options: Record<string, string>; device: string } {
    rejectUnknownOptions(this.name, spec.options, KNOWN);
    const options = { ...spec.options };
    parseBoolOption(ENABLE_ICC, options[ENABLE_ICC], true);
    parseBoolOption(ENABLE_MASQUERADE, options[ENABLE_MASQUERADE], true);
    parseMtuOption(MTU, options[MTU]);
    const device = options[BRIDGE_NAME] || `br-${spec.id.slice(0, 12)}`;
    validateIfname(BRIDGE_NAME, device);
    const owner = existing.find((n) => n.device === device);
    if (owner) throw new ConflictError(`bridge name ${device} is already used by network ${owner.name}`);
    return { options, device };
  }

  private device(net: NetworkRecord): string {
    if (!net.device) throw new Error(`bridge network ${net.name} has no device`);
    return net.device;
  }

  async createNetwork(net: NetworkRecord): Promise<void> {
    const name = this.device(net);
    const { mtu } = bridgeSettings(net);
    const link = await this.host.getLink(name);
    if (link && link.alias !== networkAlias(net.id)) {
      throw new ConflictError(
        `cannot create bridge ${name}: an interface of that name already exists on the host`,
      );
    }
    if (!link) await this.host.createBridge({ name, mtu, alias: networkAlias(net.id), mac: randomMac() });
    else if (mtu && link.mtu !== mtu) await this.host.setMtu(name, mtu);
    writeSysctl(`net/ipv6/conf/${name}/disable_ipv6`, hasIPv6(net) ? "0" : "1");
    for (const pool of net.pools) {
      await this.host.addAddress(name, withPrefix(pool.gateway, pool.subnet), {
        noDad: pool.family === 6,
      });
    }
    await this.host.setUp(name);
    // Published ports answer on the host's 127.0.0.1: DNAT'ed loopback traffic must be routable to the bridge.
    writeSysctl(`net/ipv4/conf/${name}/route_localnet`, "1");
  }

  async deleteNetwork(net: NetworkRecord): Promise<void> {
    const name = this.device(net);
    const link = await this.host.getLink(name);
    if (link && link.alias === networkAlias(net.id)) await this.host.deleteLink(name);
  }

  async join(
    net: NetworkRecord,
    ep: EndpointRecord,
    sandbox: SandboxHandle,
    defaultRoute: boolean,
  ): Promise<void> {
    const { mtu } = bridgeSettings(net);
    await this.host.createVeth({
      name: ep.hostIfname,
      peerName: ep.ifname,
      peerNetnsPath: sandbox.path,
      mtu,
      peerMac: ep.mac,
      alias: endpointAlias(ep.id),
    });
    try {
      if (!hasIPv6(net)) {
        // Without IPv6 on the network, the link-local addresses, DAD and MLD reports of every new
        // interface are only noise, flooded to all ports of the bridge: O(ports) kernel work per
        // container, which made a full network slower to fill (Docker turns them off too).
        writeSysctl(`net/ipv6/conf/${ep.hostIfname}/disable_ipv6`, "1");
        writeSysctl(`net/ipv6/conf/${ep.ifname}/disable_ipv6`, "1", sandbox.path);
      }
      await this.host.setMaster(ep.hostIfname, this.device(net));
      await this.host.setHairpin(ep.hostIfname, true);
      await this.host.setUp(ep.hostIfname);
      await addressEndpoint(sandbox.netlink, net, ep);
      if (defaultRoute) await this.setDefaultRoute(net, ep, sandbox);
    } catch (err) {
      await this.host.deleteLink(ep.hostIfname);
      throw err;
    }
  }

  async leave(_net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.host.deleteLink(ep.hostIfname);
  }

  async endpointPresent(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<boolean> {
    const link = await this.host.getLink(ep.hostIfname);
    if (link?.alias !== endpointAlias(ep.id) || !link.up) return false;
    const bridge = await this.host.getLink(this.device(net));
    if (!bridge || link.masterIndex !== bridge.index) return false;
    const inner = await sandbox.netlink.getLink(ep.ifname);
    if (!inner?.up) return false;
    const have = new Set((await sandbox.netlink.listAddresses(ep.ifname)).map((a) => a.cidr));
    return net.pools.every((p) => {
      const address = p.family === 4 ? ep.ipv4 : ep.ipv6;
      return !address || have.has(withPrefix(address, p.subnet));
    });
  }

  async setDefaultRoute(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<void> {
    if (net.internal) return;
    for (const pool of net.pools) {
      const has = pool.family === 4 ? ep.ipv4 : ep.ipv6;
      if (has) {
        await sandbox.netlink.addRoute({
          dst: "default",
          gateway: pool.gateway,
          dev: ep.ifname,
          family: pool.family,
        });
      }
    }
  }
}
