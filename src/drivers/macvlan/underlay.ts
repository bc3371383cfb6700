import type { EndpointRecord, NetworkRecord } from "../../engine/types.js";
import { ConflictError, InvalidParameterError, NotFoundError, NotSupportedError } from "../../errors.js";
import { Netlink, type RouteSpec } from "../../kernel/netlink.js";
import { writeSysctl } from "../../kernel/sysctl.js";
import { addressEndpoint, hasIPv6 } from "../addressing.js";
import { endpointAlias, networkAlias } from "../aliases.js";
import type { Driver, NetworkSpec, SandboxHandle } from "../driver.js";
import { rejectUnknownOptions, validateIfname } from "../options.js";

export const PARENT = "parent";

/** What underlay drivers need from the engine beyond the Driver contract's arguments. */
export interface UnderlayContext {
  /**
   * The namespace of the endpoint's sandbox while its container runs: the endpoint's link lives
   * only there, and `leave`/`endpointPresent` are given no sandbox.
   */
  sandboxOf(ep: EndpointRecord): string | undefined;
  /** Every network, so that a parent ctnet created outlives the network that created it while others use it. */
  networks(): Iterable<NetworkRecord>;
}

const UNDERLAY_DRIVERS = new Set(["macvlan", "ipvlan"]);
const KERNEL_OPTION = { macvlan: "CONFIG_MACVLAN", ipvlan: "CONFIG_IPVLAN" } as const;

/** `-o parent`, or the private parent ctnet made for a network created without one. */
export const parentOf = (net: NetworkRecord): string => net.options[PARENT] || net.device || "";

/**
 * Docker names the dummy parent of a network without `-o parent` this way; the name is kept for
 * the private bridge that stands in for it here.
 */
export const privateParentName = (networkId: string): string => `dm-${networkId.slice(0, 12)}`;

/** Docker's form for a VLAN sub-interface it may create: exactly `name.vid`. */
export function parseVlanParent(parent: string): { base: string; id: number } | undefined {
  const parts = parent.split(".");
  if (parts.length !== 2) return undefined;
  const [base = "", vid = ""] = parts;
  if (base === "" || !/^\d+$/.test(vid)) return undefined;
  return { base, id: Number(vid) };
}

/**
 * Networks whose endpoints are links stacked on a parent interface of the host (macvlan,
 * ipvlan): each endpoint is created directly in its sandbox, so nothing of it is left on the host
 * and deleting the sandbox removes it. The network itself owns at most its parent, when ctnet made
 * it (a VLAN sub-interface, or the private parent of a network without `-o parent`).
 */
export abstract class UnderlayDriver implements Driver {
  abstract readonly name: "macvlan" | "ipvlan";
  readonly scope = "local" as const;
  protected abstract readonly known: readonly string[];

  constructor(
    protected readonly host: Netlink,
    private readonly engine: UnderlayContext,
  ) {}

  /** Validates the driver's own options against the networks already on the same parent. */
  protected abstract checkOptions(options: Record<string, string>, sameParent: NetworkRecord[]): void;
  protected abstract createLink(
    net: NetworkRecord,
    ep: EndpointRecord,
    parent: string,
    netnsPath: string,
  ): Promise<void>;
  /** The sandbox's default routes through this network, one per family the endpoint has. */
  protected abstract defaultRoutes(net: NetworkRecord, ep: EndpointRecord): RouteSpec[];

  /**
   * A network without a parent is internal, as in Docker: its private parent leads nowhere, so
   * it gives no default route and a container's next network does.
   */
  validate(
    spec: NetworkSpec,
    existing: NetworkRecord[],
  ): { options: Record<string, string>; device?: string; internal?: boolean } {
    rejectUnknownOptions(this.name, spec.options, this.known);
    const options = { ...spec.options };
    const parent = options[PARENT];
    if (parent) {
      validateIfname(PARENT, parent);
      if (parent === "lo")
        throw new InvalidParameterError(`loopback interface is not a valid ${this.name} parent link`);
    }
    const sameParent = parent ? existing.filter((n) => n.driver === this.name && parentOf(n) === parent) : [];
    this.checkOptions(options, sameParent);
    return parent ? { options } : { options, device: privateParentName(spec.id), internal: true };
  }

  async createNetwork(net: NetworkRecord): Promise<void> {
    if (!(await this.host.hasLinkKind(this.name))) {
      throw new NotSupportedError(
        `${this.name} networks are not supported: the kernel lacks ${this.name} links (${KERNEL_OPTION[this.name]})`,
      );
    }
    const parent = net.options[PARENT];
    if (!parent) return this.createPrivateParent(net);
    if (await this.host.getLink(parent)) return;
    const vlan = parseVlanParent(parent);
    if (!vlan) {
      throw new InvalidParameterError(
        `parent interface ${parent} not found on the host (a name like eth0.10 creates a VLAN sub-interface of eth0)`,
      );
    }
    if (!(await this.host.getLink(vlan.base))) {
      throw new InvalidParameterError(
        `parent interface ${vlan.base} of VLAN sub-interface ${parent} not found on the host`,
      );
    }
    await this.host.createVlan({ name: parent, parent: vlan.base, id: vlan.id, alias: networkAlias(net.id) });
    try {
      await this.host.setUp(parent);
    } catch (err) {
      await this.host.deleteLink(parent);
      throw err;
    }
  }

  /**
   * Docker parents such a network on a dummy link; this kernel may lack dummy links
   * (CONFIG_DUMMY), so a bridge without ports and without addresses stands in: like a dummy it
   * leads nowhere, so the network's containers reach only each other, never the host or beyond.
   */
  private async createPrivateParent(net: NetworkRecord): Promise<void> {
    const name = parentOf(net);
    const link = await this.host.getLink(name);
    if (link && link.alias !== networkAlias(net.id)) {
      throw new ConflictError(
        `cannot create the private parent ${name}: an interface of that name already exists`,
      );
    }
    if (!link) await this.host.createBridge({ name, alias: networkAlias(net.id) });
    await this.host.setUp(name);
  }

  /** Removes the parent only if ctnet made it for this network; a shared one passes to the next network on it. */
  async deleteNetwork(net: NetworkRecord): Promise<void> {
    const parent = parentOf(net);
    const link = await this.host.getLink(parent);
    if (!link || link.alias !== networkAlias(net.id)) return;
    const heir = [...this.engine.networks()].find(
      (n) => n.id !== net.id && UNDERLAY_DRIVERS.has(n.driver) && parentOf(n) === parent,
    );
    if (heir) await this.host.setAlias(parent, networkAlias(heir.id));
    else await this.host.deleteLink(parent);
  }

  async join(
    net: NetworkRecord,
    ep: EndpointRecord,
    sandbox: SandboxHandle,
    defaultRoute: boolean,
  ): Promise<void> {
    await this.createLink(net, ep, parentOf(net), sandbox.path);
    const nl = sandbox.netlink;
    try {
      // The alias tells leave and endpointPresent that the link of that name is this endpoint's.
      await nl.setAlias(ep.ifname, endpointAlias(ep.id));
      if (!hasIPv6(net)) {
        // Otherwise the link-local address, DAD and MLD reports go out on a segment that was not
        // given to ctnet for IPv6 (Docker turns IPv6 off on such interfaces too).
        writeSysctl(`net/ipv6/conf/${ep.ifname}/disable_ipv6`, "1", sandbox.path);
      }
      await addressEndpoint(nl, net, ep);
      if (defaultRoute) await this.setDefaultRoute(net, ep, sandbox);
    } catch (err) {
      await nl.deleteLink(ep.ifname);
      throw err;
    }
  }

  async leave(_net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.inSandbox(ep, undefined, async (nl) => {
      if ((await nl.getLink(ep.ifname))?.alias === endpointAlias(ep.id)) await nl.deleteLink(ep.ifname);
    });
  }

  /** Without a sandbox to look into there is nothing to repair, so the endpoint counts as present. */
  async endpointPresent(_net: NetworkRecord, ep: EndpointRecord): Promise<boolean> {
    return this.inSandbox(
      ep,
      true,
      async (nl) => (await nl.getLink(ep.ifname))?.alias === endpointAlias(ep.id),
    );
  }

  async setDefaultRoute(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<void> {
    if (net.internal) return;
    for (const route of this.defaultRoutes(net, ep)) await sandbox.netlink.addRoute(route);
  }

  /** A socket of its own: the engine's cached one for the sandbox is not reachable from a driver. */
  private async inSandbox<T>(ep: EndpointRecord, fallback: T, fn: (nl: Netlink) => Promise<T>): Promise<T> {
    const path = this.engine.sandboxOf(ep);
    if (!path) return fallback;
    let nl: Netlink;
    try {
      nl = Netlink.open(path);
    } catch (err) {
      if (err instanceof NotFoundError) return fallback;
      throw err;
    }
    try {
      return await fn(nl);
    } finally {
      nl.close();
    }
  }
}
