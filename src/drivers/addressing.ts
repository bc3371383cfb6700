import type { EndpointRecord, NetworkRecord } from "../engine/types.js";
import { withPrefix } from "../ipam/index.js";
import type { Netlink } from "../kernel/netlink.js";

export const hasIPv6 = (net: NetworkRecord) => net.pools.some((p) => p.family === 6);

/**
 * Gives an endpoint's interface inside the sandbox its addresses on the network's subnets and
 * brings it up. IPv6 addresses skip duplicate address detection: IPAM already made them unique,
 * and DAD would keep them unusable for a second or more after start.
 */
export async function addressEndpoint(nl: Netlink, net: NetworkRecord, ep: EndpointRecord): Promise<void> {
  for (const pool of net.pools) {
    const address = pool.family === 4 ? ep.ipv4 : ep.ipv6;
    if (address)
      await nl.addAddress(ep.ifname, withPrefix(address, pool.subnet), { noDad: pool.family === 6 });
  }
  await nl.setUp(ep.ifname);
}
