/**
 * The slice of the Docker Engine API's JSON shapes that ctnet serves and its CLI reads. Field names
 * are Docker's, so the same types describe what the real `docker` CLI would send. Fields the daemon
 * may leave out are optional; the CLI treats every response defensively.
 */

/** Docker's `map[string][]string` filters, sent JSON-encoded in the `filters` query parameter. */
export type Filters = Record<string, string[]>;

export interface IPAMConfig {
  Subnet?: string;
  IPRange?: string;
  Gateway?: string;
  AuxiliaryAddresses?: Record<string, string>;
}

export interface IPAM {
  Driver?: string;
  Config?: IPAMConfig[];
  Options?: Record<string, string>;
}

export interface NetworkCreateRequest {
  Name: string;
  Driver?: string;
  Internal?: boolean;
  Attachable?: boolean;
  EnableIPv6?: boolean;
  Options?: Record<string, string>;
  Labels?: Record<string, string>;
  IPAM?: IPAM;
}

export interface NetworkCreateResponse {
  Id: string;
  Warning?: string;
}

export interface NetworkContainer {
  Name?: string;
  EndpointID?: string;
  MacAddress?: string;
  IPv4Address?: string;
  IPv6Address?: string;
}

export interface Network {
  Name: string;
  Id: string;
  Created?: string;
  Scope?: string;
  Driver?: string;
  EnableIPv4?: boolean;
  EnableIPv6?: boolean;
  Internal?: boolean;
  Attachable?: boolean;
  Ingress?: boolean;
  IPAM?: IPAM;
  Options?: Record<string, string>;
  Labels?: Record<string, string>;
  Containers?: Record<string, NetworkContainer>;
  [key: string]: unknown;
}

export interface NetworkPruneResponse {
  NetworksDeleted?: string[] | null;
}

export interface EndpointIPAMConfig {
  IPv4Address?: string;
  IPv6Address?: string;
}

export interface EndpointSettings {
  IPAMConfig?: EndpointIPAMConfig;
  Aliases?: string[];
  NetworkID?: string;
  EndpointID?: string;
  Gateway?: string;
  IPAddress?: string;
  IPPrefixLen?: number;
  IPv6Gateway?: string;
  GlobalIPv6Address?: string;
  GlobalIPv6PrefixLen?: number;
  MacAddress?: string;
  DNSNames?: string[];
}

export interface NetworkConnectRequest {
  Container: string;
  EndpointConfig?: EndpointSettings;
}

export interface NetworkDisconnectRequest {
  Container: string;
  Force?: boolean;
}

export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

/** Keys are `PORT/PROTO`, as in `80/tcp`. */
export type PortMap = Record<string, PortBinding[] | null>;

export interface HostConfig {
  NetworkMode?: string;
  AutoRemove?: boolean;
  Dns?: string[];
  PortBindings?: PortMap;
  PublishAllPorts?: boolean;
  [key: string]: unknown;
}

export interface ContainerCreateRequest {
  Hostname?: string;
  Env?: string[];
  Cmd?: string[];
  Image: string;
  Tty?: boolean;
  OpenStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  ExposedPorts?: Record<string, Record<string, never>>;
  HostConfig?: HostConfig;
  NetworkingConfig?: { EndpointsConfig?: Record<string, EndpointSettings> };
}

export interface ContainerCreateResponse {
  Id: string;
  Warnings?: string[] | null;
}

export interface ContainerState {
  Status?: string;
  Running?: boolean;
  Paused?: boolean;
  Restarting?: boolean;
  Dead?: boolean;
  Pid?: number;
  ExitCode?: number;
  Error?: string;
  StartedAt?: string;
  FinishedAt?: string;
}

export interface ContainerInspect {
  Id: string;
  Name?: string;
  Created?: string;
  Path?: string;
  Args?: string[];
  State?: ContainerState;
  Config?: { Hostname?: string; Tty?: boolean; Env?: string[]; Cmd?: string[]; Image?: string };
  HostConfig?: HostConfig;
  NetworkSettings?: {
    Ports?: PortMap;
    Networks?: Record<string, EndpointSettings>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface PortSummary {
  IP?: string;
  PrivatePort: number;
  PublicPort?: number;
  Type: string;
}

export interface ContainerSummary {
  Id: string;
  Names?: string[];
  Image?: string;
  Command?: string;
  Created?: number;
  Ports?: PortSummary[];
  Labels?: Record<string, string>;
  State?: string;
  Status?: string;
  NetworkSettings?: { Networks?: Record<string, EndpointSettings> };
  [key: string]: unknown;
}

export interface ContainerWaitResponse {
  StatusCode: number;
  Error?: { Message?: string } | null;
}

export interface SystemVersion {
  Version?: string;
  ApiVersion?: string;
  MinAPIVersion?: string;
  Os?: string;
  Arch?: string;
  KernelVersion?: string;
  [key: string]: unknown;
}

export type SystemInfo = Record<string, unknown>;

export interface ImageSummary {
  Id: string;
  ParentId?: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  /** Unix seconds. */
  Created?: number;
  Size?: number;
  /** -1 when the daemon did not compute it. */
  SharedSize?: number;
  Labels?: Record<string, string> | null;
  /** -1 when the daemon did not compute it. */
  Containers?: number;
  [key: string]: unknown;
}

export interface ImageConfig {
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  WorkingDir?: string;
  [key: string]: unknown;
}

export interface ImageInspect {
  Id: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  Comment?: string;
  Created?: string;
  Config?: ImageConfig | null;
  Architecture?: string;
  Os?: string;
  Size?: number;
  [key: string]: unknown;
}

/** One line of DELETE /images/{name}: each untagged reference and each deleted id. */
export interface ImageDeleteResponseItem {
  Untagged?: string;
  Deleted?: string;
}

/** One line of a JSON progress stream (import, pull); a failure carries `error`/`errorDetail`. */
export interface ProgressMessage {
  status?: string;
  id?: string;
  progress?: string;
  error?: string;
  errorDetail?: { code?: number; message?: string };
  [key: string]: unknown;
}

/** GET /ctnet/cluster */
export interface ClusterInfo {
  NodeName: string;
  Role: "member" | "client" | "none";
  Addr: string;
  Hosts: { Name: string; Addr: string; Role: string; State: "ready" | "down"; Self: boolean }[];
}

export interface ServicePortConfig {
  Protocol?: "tcp" | "udp";
  TargetPort: number;
  PublishedPort?: number;
  PublishMode?: "ingress" | "host";
}

export interface ServiceSpec {
  Name?: string;
  Labels?: Record<string, string>;
  TaskTemplate?: {
    ContainerSpec?: { Image?: string; Command?: string[]; Args?: string[]; Env?: string[] };
    Networks?: { Target: string }[];
    [key: string]: unknown;
  };
  Mode?: { Replicated?: { Replicas?: number } };
  EndpointSpec?: { Mode?: "vip" | "dnsrr"; Ports?: ServicePortConfig[] };
}

export interface Service {
  ID: string;
  Version?: { Index: number };
  CreatedAt?: string;
  UpdatedAt?: string;
  Spec: ServiceSpec;
  Endpoint?: {
    Spec?: ServiceSpec["EndpointSpec"];
    Ports?: ServicePortConfig[];
    VirtualIPs?: { NetworkID: string; Addr: string }[];
  };
  ServiceStatus?: { RunningTasks: number; DesiredTasks: number };
}

export interface ServiceCreateResponse {
  ID: string;
  Warnings?: string[] | null;
}

export interface Task {
  ID: string;
  CreatedAt?: string;
  UpdatedAt?: string;
  Spec?: ServiceSpec["TaskTemplate"];
  ServiceID: string;
  Slot?: number;
  NodeID?: string;
  Status?: {
    Timestamp?: string;
    State?: string;
    Message?: string;
    Err?: string;
    ContainerStatus?: { ContainerID?: string; PID?: number; ExitCode?: number };
    PortStatus?: { Ports?: ServicePortConfig[] };
  };
  DesiredState?: string;
  NetworksAttachments?: { Network: { ID: string; Spec?: { Name?: string } }; Addresses: string[] }[];
}
