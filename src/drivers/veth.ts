import type { EndpointRecord, NetworkRecord } from "../engine/types.js";
import { withPrefix } from "../ipam/index.js";
import type { Netlink } from "../kernel/netlink.js";
import { writeSysctl } from "../kernel/sysctl.js";
import { addressEndpoint, hasIPv6 } from "./addressing.js";
import { endpointAlias } from "./aliases.js";
import type { SandboxHandle } from "./driver.js";

/**
 * An endpoint as a veth pair: the host side a port of `bridge`, the sandbox side addressed and up.
 * On failure the pair is removed again.
 */
export async function joinVeth(
  host: Netlink,
  net: NetworkRecord,
  ep: EndpointRecord,
  sandbox: SandboxHandle,
  bridge: string,
  mtu: number | undefined,
): Promise<void> {
  await host.createVeth({
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
      // interface are only noise, flooded to all ports of the bridge.
      writeSysctl(`net/ipv6/conf/${ep.hostIfname}/disable_ipv6`, "1");
      writeSysctl(`net/ipv6/conf/${ep.ifname}/disable_ipv6`, "1", sandbox.path);
    }
    await host.setMaster(ep.hostIfname, bridge);
    await host.setHairpin(ep.hostIfname, true);
    await host.setUp(ep.hostIfname);
    await addressEndpoint(sandbox.netlink, net, ep);
  } catch (err) {
    await host.deleteLink(ep.hostIfname);
    throw err;
  }
}

/** Whether the veth is up on `bridge` and the sandbox side is up with all its addresses. */
export async function vethPresent(
  host: Netlink,
  net: NetworkRecord,
  ep: EndpointRecord,
  sandbox: SandboxHandle,
  bridge: string,
): Promise<boolean> {
  const link = await host.getLink(ep.hostIfname);
  if (link?.alias !== endpointAlias(ep.id) || !link.up) return false;
  const br = await host.getLink(bridge);
  if (!br || link.masterIndex !== br.index) return false;
  const inner = await sandbox.netlink.getLink(ep.ifname);
  if (!inner?.up) return false;
  const have = new Set((await sandbox.netlink.listAddresses(ep.ifname)).map((a) => a.cidr));
  return net.pools.every((p) => {
    const address = p.family === 4 ? ep.ipv4 : ep.ipv6;
    return !address || have.has(withPrefix(address, p.subnet));
  });
}
