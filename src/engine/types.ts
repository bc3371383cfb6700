import type { ApiPortMap } from "../ports/parse.js";
import type { PortBinding, PortBindingRequest } from "../ports/types.js";
import type { StdioConfig } from "../runtime/console.js";

/**
 * The CNM records the engine keeps in the store. Plain data: everything a driver, the firewall
 * renderer or the API needs can be computed from these.
 */

export interface PoolRecord {
  family: 4 | 6;
  subnet: string;
  ipRange?: string;
  gateway: string;
  auxAddresses: Record<string, string>;
}

export interface NetworkRecord {
  id: string;
  name: string;
  driver: string;
  scope: "local" | "global" | "swarm";
  created: string;
  internal: boolean;
  attachable: boolean;
  enableIPv4: boolean;
  enableIPv6: boolean;
  /** the user asked for these subnets, so static --ip is allowed (Docker's rule) */
  userSubnets: boolean;
  options: Record<string, string>;
  labels: Record<string, string>;
  ipamOptions: Record<string, string>;
  pools: PoolRecord[];
  /** bridge, host and none exist from the start and cannot be removed */
  predefined: boolean;
  /** kernel name of the network's device (the Linux bridge), when the driver has one */
  device?: string;
  /**
   * Whether ctnet made the device. false: a bridge the user made before the network (with an
   * uplink on it, as in Docker's guides), which ctnet adopted and never deletes. Set by the
   * driver when it creates or repairs the network.
   */
  deviceCreated?: boolean;
  /** the addresses (CIDR) ctnet added to an adopted device: the only ones it removes from it */
  deviceAddresses?: string[];
}

/** An interface of a sandbox on a network. */
export interface EndpointRecord {
  id: string;
  networkId: string;
  containerId: string;
  /** name inside the sandbox: eth0, eth1, … */
  ifname: string;
  /** host side of the veth pair */
  hostIfname: string;
  mac: string;
  ipv4?: string;
  ipv6?: string;
  aliases: string[];
  /** join order in the sandbox; the first non-internal network gives the default route */
  order: number;
  /**
   * ctnet added this endpoint on the gateway bridge for a container whose only networks are
   * overlays, for egress and published ports; it is not one of the container's own networks.
   */
  gateway?: boolean;
}

/** What a container asked for on one network; kept while the container is stopped, like Docker. */
export interface AttachmentConfig {
  networkId: string;
  ipv4?: string;
  ipv6?: string;
  aliases: string[];
}

export type NetworkMode =
  | { kind: "bridge" }
  | { kind: "host" }
  | { kind: "none" }
  | { kind: "container"; containerId: string };

export interface ContainerState {
  status: "created" | "running" | "exited" | "removing";
  /** host pid of the container's init (PID 1 of its pid namespace) */
  pid: number;
  /** start time of that pid (/proc/PID/stat field 22), to tell our process from a recycled pid */
  pidStartTime: number;
  /** pid of the unshare(1) process that owns the namespaces; killing it kills the container */
  runnerPid: number;
  exitCode: number;
  error: string;
  startedAt: string;
  finishedAt: string;
}

/** What a container asked to publish, as validated at create (Docker's API shapes kept for views). */
export interface PortsConfig {
  /** "80/tcp" keys: exposed ports, published or not */
  exposed: string[];
  requests: PortBindingRequest[];
  /** HostConfig.PortBindings as the client sent it, for inspect */
  bindings: ApiPortMap;
  publishAll: boolean;
}

export interface ContainerRecord {
  id: string;
  name: string;
  created: string;
  /** the image reference as given, and the id it resolved to ("" for the host filesystem) */
  image: string;
  imageId: string;
  cmd: string[];
  env: string[];
  workingDir: string;
  hostname: string;
  domainname: string;
  labels: Record<string, string>;
  networkModeText: string;
  networkMode: NetworkMode;
  dns: string[];
  autoRemove: boolean;
  /** Tty, OpenStdin, StdinOnce, Attach*; absent in records made before they were supported (all false) */
  stdio?: StdioConfig;
  attachments: AttachmentConfig[];
  ports: PortsConfig;
  /** host ports given out while the container runs */
  published: PortBinding[];
  state: ContainerState;
  /** path of the sandbox's network namespace while running (own or borrowed) */
  sandboxPath: string;
}
