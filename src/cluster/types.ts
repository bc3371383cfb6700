/**
 * What ctnet hosts share through the cluster store. Plain data, JSON in etcd.
 */
import type { PoolRecord } from "../engine/types.js";

/** A host that is up: its key lives on the host's lease, so it vanishes when the host dies. */
export interface ClusterHost {
  name: string;
  /** the host's underlay address: VXLAN traffic to its containers goes there */
  addr: string;
  started: string;
}

/** Every host that ever joined and has not left; shown as down while its lease key is gone. */
export interface ClusterMember {
  name: string;
  addr: string;
  role: "member" | "client";
  joined: string;
}

/** An endpoint of a global network, as the other hosts need it: where it is and how to reach it. */
export interface ClusterEndpoint {
  id: string;
  networkId: string;
  host: string;
  hostAddr: string;
  containerId: string;
  containerName: string;
  aliases: string[];
  mac: string;
  ipv4?: string;
  ipv6?: string;
}

/** One address of a global network, claimed by compare-and-swap so no two hosts ever get it. */
export interface AddressClaim {
  endpoint: string;
  host: string;
}

/** The cluster-wide facts a new global network must not collide with, kept in one record. */
export interface Registry {
  networks: Record<string, { name: string; vni: number; pools: PoolRecord[] }>;
}

/** Docker's option that holds an overlay network's VXLAN id (shown by `network inspect`). */
export const VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list";

/** A port a service publishes: on every host through the routing mesh, or on its tasks' hosts. */
export interface ServicePort {
  mode: "ingress" | "host";
  protocol: "tcp" | "udp";
  published: number;
  target: number;
}

/** A service's desired state, written by whoever handles create/update/scale. */
export interface ServiceRecord {
  id: string;
  name: string;
  created: string;
  updated: string;
  /** bumped on every change, for Docker's Version.Index */
  version: number;
  /** image reference, or "" for the host's filesystem (ctnet's image-less containers) */
  image: string;
  /** replaces the image's ENTRYPOINT (Docker's ContainerSpec.Command); absent keeps the image's */
  entrypoint?: string[];
  cmd: string[];
  env: string[];
  labels: Record<string, string>;
  replicas: number;
  /** ids of the global networks its tasks join, in order */
  networks: string[];
  endpointMode: "vip" | "dnsrr";
  ports: ServicePort[];
  /** network id → the service's virtual IP there (vip mode; the ingress network too when it publishes) */
  vips: Record<string, string>;
}

/** A task as the scheduler decides it: which slot of which service runs where. Written by the scheduler only. */
export interface TaskRecord {
  id: string;
  serviceId: string;
  slot: number;
  /** "" while no host can take it */
  host: string;
  desired: "running" | "shutdown";
  /** why it waits (no host fits), for `service ps` */
  pending: string;
  created: string;
}

/**
 * A task as its host reports it. Written only by the task's host, on that host's lease: a host that
 * dies takes its tasks' statuses with it, which is how the scheduler and the load balancers learn.
 */
export interface TaskStatus {
  id: string;
  host: string;
  state: "starting" | "running" | "failed" | "shutdown";
  message: string;
  containerId: string;
  /** network id → the task's address on it */
  addresses: Record<string, string>;
  updated: string;
}
