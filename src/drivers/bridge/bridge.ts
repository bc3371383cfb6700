import ipaddr from "ipaddr.js";
import type { EndpointRecord, NetworkRecord, PoolRecord } from "../../engine/types.js";
import { ConflictError, InvalidParameterError } from "../../errors.js";
import { randomMac, withPrefix } from "../../ipam/index.js";
import type { Netlink } from "../../kernel/netlink.js";
import { writeSysctl } from "../../kernel/sysctl.js";
import { log } from "../../log.js";
import { hasIPv6 } from "../addressing.js";
import { networkAlias } from "../aliases.js";
import type { Driver, NetworkSpec, SandboxHandle } from "../driver.js";
import { parseBoolOption, parseMtuOption, rejectUnknownOptions, validateIfname } from "../options.js";
import { joinVeth, vethPresent } from "../veth.js";

export const BRIDGE_NAME = "com.docker.network.bridge.name";
export const ENABLE_ICC = "com.docker.network.bridge.enable_icc";
export const ENABLE_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade";
export const HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4";
export const DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge";
export const MTU = "com.docker.network.driver.mtu";

const KNOWN = [BRIDGE_NAME, ENABLE_ICC, ENABLE_MASQUERADE, HOST_BINDING_IPV4, DEFAULT_BRIDGE, MTU] as const;

/**
 * Docker's reserved --aux-address names: the router containers of the network route through,
 * when it is not the bridge itself (a bridge on an uplink whose router is another machine).
 */
export const DEFAULT_GATEWAY_AUX = { 4: "DefaultGatewayIPv4", 6: "DefaultGatewayIPv6" } as const;

/** Where an endpoint's default route points: DefaultGatewayIPv4/IPv6 if given, else the bridge. */
export const defaultGateway = (pool: PoolRecord): string =>
  pool.auxAddresses[DEFAULT_GATEWAY_AUX[pool.family]] ?? pool.gateway;

/** Alias written on every link ctnet makes, so that start-up can tell its leftovers from others' links. */

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

  /**
   * A bridge of the requested name that the user made (with an uplink on it, as Docker's guides
   * do) is adopted rather than refused: as Docker does, ctnet uses it and never deletes it. Unlike
   * Docker, it also leaves the bridge's own addresses and settings alone, only adding a gateway
   * address the bridge lacks. The record says which case it is (`deviceCreated`), and which
   * addresses ctnet added to an adopted bridge (`deviceAddresses`); the engine stores it.
   */
  async createNetwork(net: NetworkRecord): Promise<void> {
    checkDefaultGateways(net);
    const name = this.device(net);
    const link = await this.host.getLink(name);
    if (link && link.alias !== networkAlias(net.id)) {
      if (link.kind !== "bridge" || link.alias?.startsWith("ctnet:")) {
        throw new ConflictError(
          `cannot create bridge ${name}: an interface of that name already exists on the host${link.kind === "bridge" ? "" : " and is not a bridge"}`,
        );
      }
      return this.adopt(net, name);
    }
    if (!link && net.deviceCreated === false) {
      log.warn(
        { network: net.name, bridge: name },
        "the adopted bridge is gone: creating one without its uplink",
      );
    }
    net.deviceCreated = true;
    delete net.deviceAddresses;
    const { mtu } = bridgeSettings(net);
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

  /**
   * route_localnet stays off on an adopted bridge: on a bridge with an uplink it would let any
   * machine of that segment reach the host's loopback services. So the host's 127.0.0.1 does not
   * reach ports published by its containers; the host's other addresses do.
   */
  private async adopt(net: NetworkRecord, name: string): Promise<void> {
    const added = net.deviceCreated === false ? [...(net.deviceAddresses ?? [])] : [];
    net.deviceCreated = false;
    net.deviceAddresses = added;
    const present = new Set((await this.host.listAddresses(name)).map((a) => canonical(a.cidr)));
    if (hasIPv6(net)) writeSysctl(`net/ipv6/conf/${name}/disable_ipv6`, "0");
    for (const pool of net.pools) {
      if (present.has(canonical(pool.gateway))) continue;
      const cidr = withPrefix(pool.gateway, pool.subnet);
      // Recorded first, so that the rollback of a failed create removes it.
      if (!added.includes(cidr)) added.push(cidr);
      await this.host.addAddress(name, cidr, { noDad: pool.family === 6 });
    }
    await this.host.setUp(name);
  }

  async deleteNetwork(net: NetworkRecord): Promise<void> {
    const name = this.device(net);
    const link = await this.host.getLink(name);
    if (!link) return;
    if (link.alias === networkAlias(net.id)) await this.host.deleteLink(name);
    else if (net.deviceCreated === false) {
      for (const cidr of net.deviceAddresses ?? []) await this.host.delAddress(name, cidr);
    }
  }

  async join(
    net: NetworkRecord,
    ep: EndpointRecord,
    sandbox: SandboxHandle,
    defaultRoute: boolean,
  ): Promise<void> {
    await joinVeth(this.host, net, ep, sandbox, this.device(net), bridgeSettings(net).mtu);
    if (!defaultRoute) return;
    try {
      await this.setDefaultRoute(net, ep, sandbox);
    } catch (err) {
      await this.host.deleteLink(ep.hostIfname);
      throw err;
    }
  }

  async leave(_net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.host.deleteLink(ep.hostIfname);
  }

  async endpointPresent(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<boolean> {
    return vethPresent(this.host, net, ep, sandbox, this.device(net));
  }

  async setDefaultRoute(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<void> {
    if (net.internal) return;
    for (const pool of net.pools) {
      const has = pool.family === 4 ? ep.ipv4 : ep.ipv6;
      if (has) {
        await sandbox.netlink.addRoute({
          dst: "default",
          gateway: defaultGateway(pool),
          dev: ep.ifname,
          family: pool.family,
        });
      }
    }
  }
}

/** An address without its prefix, in one spelling, so that IPv6 forms compare equal. */
const canonical = (address: string): string => ipaddr.parse(address.replace(/\/\d+$/, "")).toString();

/**
 * Docker's rule for DefaultGatewayIPv4/IPv6: an address of the network's subnet of that family
 * (IPAM has already checked that each auxiliary address lies in its subnet).
 */
function checkDefaultGateways(net: NetworkRecord): void {
  for (const pool of net.pools) {
    for (const family of [4, 6] as const) {
      const key = DEFAULT_GATEWAY_AUX[family];
      const address = pool.auxAddresses[key];
      if (address !== undefined && pool.family !== family) {
        throw new InvalidParameterError(
          `invalid auxiliary address ${key}: ${address} is in IPv${pool.family} subnet ${pool.subnet}; ${key} must be an address of the network's IPv${family} subnet`,
        );
      }
    }
  }
}
