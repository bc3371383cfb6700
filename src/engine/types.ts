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

export interface ContainerRecord {
  id: string;
  name: string;
  created: string;
  image: string;
  cmd: string[];
  env: string[];
  hostname: string;
  domainname: string;
  labels: Record<string, string>;
  networkModeText: string;
  networkMode: NetworkMode;
  dns: string[];
  autoRemove: boolean;
  attachments: AttachmentConfig[];
  state: ContainerState;
  /** path of the sandbox's network namespace while running (own or borrowed) */
  sandboxPath: string;
}
