import type { EndpointRecord, NetworkRecord } from "../../engine/types.js";
import { InvalidParameterError } from "../../errors.js";
import type { IpvlanFlag, IpvlanMode, RouteSpec } from "../../kernel/netlink.js";
import { PARENT, UnderlayDriver } from "../macvlan/underlay.js";

export const IPVLAN_MODE = "ipvlan_mode";
export const IPVLAN_FLAG = "ipvlan_flag";
const MODES: readonly IpvlanMode[] = ["l2", "l3", "l3s"];
const FLAGS: readonly IpvlanFlag[] = ["bridge", "private", "vepa"];

function ipvlanMode(options: Record<string, string>): IpvlanMode {
  const mode = options[IPVLAN_MODE] || "l2";
  if (!(MODES as readonly string[]).includes(mode)) {
    throw new InvalidParameterError(
      `requested ipvlan mode '${mode}' is not valid, 'l2' mode is the ipvlan driver default`,
    );
  }
  return mode as IpvlanMode;
}

function ipvlanFlag(options: Record<string, string>): IpvlanFlag {
  const flag = options[IPVLAN_FLAG] || "bridge";
  if (!(FLAGS as readonly string[]).includes(flag)) {
    throw new InvalidParameterError(
      `requested ipvlan flag '${flag}' is not valid, 'bridge' is the ipvlan driver default`,
    );
  }
  return flag as IpvlanFlag;
}

/**
 * Docker's ipvlan driver: endpoints share the parent's MAC. In L2 mode the parent's segment sees
 * the containers' addresses and they route through the network's gateway; in L3 and L3S modes the
 * parent routes for them (no ARP or broadcast reaches them), so their default route is the
 * interface itself and the rest of the network needs routes to the container subnets via the host.
 */
export class IpvlanDriver extends UnderlayDriver {
  readonly name = "ipvlan";
  protected readonly known = [PARENT, IPVLAN_MODE, IPVLAN_FLAG] as const;

  protected checkOptions(options: Record<string, string>): void {
    ipvlanMode(options);
    ipvlanFlag(options);
  }

  protected async createLink(
    net: NetworkRecord,
    ep: EndpointRecord,
    parent: string,
    netnsPath: string,
  ): Promise<void> {
    await this.host.createIpvlan({
      name: ep.ifname,
      parent,
      netnsPath,
      mode: ipvlanMode(net.options),
      flag: ipvlanFlag(net.options),
    });
  }

  protected defaultRoutes(net: NetworkRecord, ep: EndpointRecord): RouteSpec[] {
    const l2 = ipvlanMode(net.options) === "l2";
    return net.pools
      .filter((p) => (p.family === 4 ? ep.ipv4 : ep.ipv6))
      .map((p) =>
        l2
          ? { dst: "default", gateway: p.gateway, dev: ep.ifname, family: p.family }
          : { dst: "default", dev: ep.ifname, family: p.family },
      );
  }
}
