import type { EndpointRecord, NetworkRecord } from "../../engine/types.js";
import { ConflictError, InvalidParameterError } from "../../errors.js";
import type { MacvlanMode, RouteSpec } from "../../kernel/netlink.js";
import { PARENT, UnderlayDriver } from "./underlay.js";

export const MACVLAN_MODE = "macvlan_mode";
const MODES: readonly MacvlanMode[] = ["bridge", "private", "vepa", "passthru"];

function macvlanMode(options: Record<string, string>): MacvlanMode {
  const mode = options[MACVLAN_MODE] || "bridge";
  if (!(MODES as readonly string[]).includes(mode)) {
    throw new InvalidParameterError(
      `requested macvlan mode '${mode}' is not valid, 'bridge' mode is the macvlan driver default`,
    );
  }
  return mode as MacvlanMode;
}

/**
 * Docker's macvlan driver: each endpoint is a macvlan link of the parent with the endpoint's own
 * MAC, so containers are machines of the parent's segment. The host cannot reach them through the
 * parent (macvlan isolation), and their traffic never crosses the host's forward path, so the
 * network needs no firewall entries.
 */
export class MacvlanDriver extends UnderlayDriver {
  readonly name = "macvlan";
  protected readonly known = [PARENT, MACVLAN_MODE] as const;

  /** passthru gives the parent to one macvlan, so it shares the parent with no other network (Docker's rule). */
  protected checkOptions(options: Record<string, string>, sameParent: NetworkRecord[]): void {
    const mode = macvlanMode(options);
    const parent = options[PARENT];
    for (const other of sameParent) {
      if (mode === "passthru") {
        throw new ConflictError(
          `cannot use mode passthru, macvlan network ${other.name} is already using parent interface ${parent}`,
        );
      }
      if (macvlanMode(other.options) === "passthru") {
        throw new ConflictError(
          `macvlan network ${other.name} is already using parent interface ${parent} in mode passthru`,
        );
      }
    }
  }

  protected async createLink(
    net: NetworkRecord,
    ep: EndpointRecord,
    parent: string,
    netnsPath: string,
  ): Promise<void> {
    await this.host.createMacvlan({
      name: ep.ifname,
      parent,
      netnsPath,
      mode: macvlanMode(net.options),
      mac: ep.mac,
    });
  }

  protected defaultRoutes(net: NetworkRecord, ep: EndpointRecord): RouteSpec[] {
    return net.pools
      .filter((p) => (p.family === 4 ? ep.ipv4 : ep.ipv6))
      .map((p) => ({ dst: "default", gateway: p.gateway, dev: ep.ifname, family: p.family }));
  }
}
