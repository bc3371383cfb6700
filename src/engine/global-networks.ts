import type { Cluster } from "../cluster/cluster.js";
import { type ClusterEndpoint, type Registry, VXLAN_ID_OPTION } from "../cluster/types.js";
import { FIRST_VNI } from "../drivers/overlay/overlay.js";
import { ConflictError, ForbiddenError, NotSupportedError } from "../errors.js";
import { Ipam } from "../ipam/index.js";
import type { IpamConfigRequest } from "./networks.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord, PoolRecord } from "./types.js";

/** Docker's default pools for overlays: 10.0.0.0/8 in /24s. */
export const GLOBAL_POOLS4 = [{ base: "10.0.0.0/8", size: 24 }];
/** One fixed ULA /48 for every host of every cluster: global subnets must be chosen alike everywhere. */
export const GLOBAL_POOL6 = { base: "fd0c:7e74:6f76::/48", size: 64 };

export const newGlobalIpam = () => new Ipam({ defaultPools4: GLOBAL_POOLS4, defaultPool6: GLOBAL_POOL6 });

export function requireCluster(cluster: Cluster | undefined, driver: string): Cluster {
  if (!cluster) {
    throw new NotSupportedError(
      `${driver} networks span hosts and need a cluster: run \`ctnet cluster init\` on this host, or \`ctnet cluster join\` to join one`,
    );
  }
  return cluster;
}

/** The parts of a network create that are settled before the cluster's registry is consulted. */
export type GlobalNetworkDraft = Omit<NetworkRecord, "pools" | "scope" | "predefined"> & {
  requests: { family: 4 | 6; req: IpamConfigRequest }[];
};

/**
 * Completes a global network against the registry as read: its name must be free cluster-wide,
 * its VNI is the one asked for (if free) or the lowest free one from 4097, and its subnets may not
 * overlap another global network's. Pure: the caller commits the result by compare-and-swap.
 */
export function completeGlobalNetwork(draft: GlobalNetworkDraft, registry: Registry): NetworkRecord {
  const others = Object.entries(registry.networks);
  const taken = others.find(([, n]) => n.name === draft.name);
  if (taken) throw new ConflictError(`network with name ${draft.name} already exists`);
  const vnis = new Set(others.map(([, n]) => n.vni));
  const asked = draft.options[VXLAN_ID_OPTION];
  let vni: number;
  if (asked !== undefined) {
    vni = Number(asked);
    if (vnis.has(vni)) throw new ForbiddenError(`VXLAN id ${vni} is already used by another network`);
  } else {
    vni = FIRST_VNI;
    while (vnis.has(vni)) vni++;
  }
  const ipam = newGlobalIpam();
  for (const [id, n] of others) {
    for (const pool of n.pools) ipam.restorePool(id, pool);
  }
  const pools: PoolRecord[] = draft.requests.map((r) => ({ ...ipam.requestPool(draft.id, r.family, r.req) }));
  const { requests: _requests, ...rest } = draft;
  return {
    ...rest,
    scope: "global",
    predefined: false,
    options: { ...draft.options, [VXLAN_ID_OPTION]: String(vni) },
    pools,
  };
}

/** An endpoint of this host as the other hosts see it. */
export function clusterEndpoint(cluster: Cluster, ep: EndpointRecord, c: ContainerRecord): ClusterEndpoint {
  return {
    id: ep.id,
    networkId: ep.networkId,
    host: cluster.nodeName,
    hostAddr: cluster.advertiseAddr,
    containerId: c.id,
    containerName: c.name,
    aliases: ep.aliases,
    mac: ep.mac,
    ...(ep.ipv4 ? { ipv4: ep.ipv4 } : {}),
    ...(ep.ipv6 ? { ipv6: ep.ipv6 } : {}),
  };
}
