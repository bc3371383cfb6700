/**
 * The names Docker's swarm mode gives things, which ctnet's services keep so that tools written
 * for Docker recognise them: the routing mesh's network, object ids, a task container's labels.
 */
import { randomBytes } from "node:crypto";
import type { NetworkRecord } from "./types.js";

/** The routing mesh's overlay network, by name. */
export const INGRESS_NETWORK = "ingress";
export const INGRESS_SUBNET = "10.255.0.0/16";
/** The label of swarm-internal networks, which `ingress` carries. */
export const SWARM_INTERNAL_LABEL = "com.docker.swarm.internal";

export const isIngress = (net: NetworkRecord | undefined): boolean =>
  net?.name === INGRESS_NETWORK && net.scope === "global";

/** 25 characters of [0-9a-z], as swarm's object ids. */
export function newObjectId(): string {
  const n = BigInt(`0x${randomBytes(16).toString("hex")}`);
  return n.toString(36).padStart(25, "0").slice(-25);
}

/** The labels on a task's container. */
export const TASK_LABELS = {
  serviceName: "com.docker.swarm.service.name",
  serviceId: "com.docker.swarm.service.id",
  taskId: "com.docker.swarm.task.id",
  taskName: "com.docker.swarm.task.name",
  nodeId: "com.docker.swarm.node.id",
} as const;
