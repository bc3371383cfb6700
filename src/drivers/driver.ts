import type { EndpointRecord, NetworkRecord } from "../engine/types.js";
import type { Netlink } from "../kernel/netlink.js";

/** A sandbox as drivers see it: the namespace's path and a netlink socket inside it. */
export interface SandboxHandle {
  path: string;
  netlink: Netlink;
}

/** What a driver needs from the network create request to validate it. */
export interface NetworkSpec {
  id: string;
  name: string;
  options: Record<string, string>;
  internal: boolean;
  enableIPv6: boolean;
}

/**
 * One network driver, in libnetwork's shape: network life cycle, then join/leave of a sandbox.
 * Every method that changes the kernel is idempotent, so the engine can use the same calls to
 * build, to roll back and to repair at start-up.
 */
export interface Driver {
  readonly name: string;
  /** "local" networks live on one host; "global" ones span the cluster */
  readonly scope: "local" | "global";
  /**
   * Validates driver options (unknown ones are an error) and returns them normalised; `internal`
   * when the driver makes the network internal whatever was asked (as Docker's macvlan and ipvlan
   * do without a parent).
   */
  validate(
    spec: NetworkSpec,
    existing: NetworkRecord[],
  ): { options: Record<string, string>; device?: string; internal?: boolean };
  /**
   * Makes sure the network's kernel objects exist and are configured. It may note in `net` what
   * it found (whether it made the device); the engine stores the record after this call.
   */
  createNetwork(net: NetworkRecord): Promise<void>;
  deleteNetwork(net: NetworkRecord): Promise<void>;
  /** Creates the endpoint's interface inside the sandbox, addressed and up. */
  join(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle, defaultRoute: boolean): Promise<void>;
  /** Removes the endpoint's interface (the sandbox itself may already be gone). */
  leave(net: NetworkRecord, ep: EndpointRecord): Promise<void>;
  /**
   * Whether the endpoint's kernel objects are all present and configured (used by reconcile: a
   * crash in the middle of a join can leave an interface without its addresses or bridge).
   */
  endpointPresent(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<boolean>;
  /** The last endpoint of this host left the network (drivers that make devices per host free them). */
  networkIdle?(net: NetworkRecord): Promise<void>;
  /** Points the sandbox's default route at this network's gateway. */
  setDefaultRoute(net: NetworkRecord, ep: EndpointRecord, sandbox: SandboxHandle): Promise<void>;
}
