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
