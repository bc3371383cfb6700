/** Services, tasks and nodes in the Docker Engine API's JSON shapes. */
import { arch } from "node:os";
import type { ServicePort, ServiceRecord, TaskRecord, TaskStatus } from "../cluster/types.js";
import type { ClusterInfo } from "../engine/cluster-ops.js";
import type { EngineContext } from "../engine/context.js";
import { CTNET_VERSION } from "./version.js";

/** "10.0.1.5" → "10.0.1.5/24", with the prefix of the network's subnet, as Docker shows addresses here. */
function withPrefix(ctx: EngineContext, networkId: string, address: string): string {
  const pool = ctx.networks.get(networkId)?.pools.find((p) => p.family === 4);
  return pool ? `${address}/${pool.subnet.split("/")[1]}` : address;
}

const portView = (p: ServicePort) => ({
  Protocol: p.protocol,
  TargetPort: p.target,
  PublishedPort: p.published,
  PublishMode: p.mode,
});

/** The task template as Docker's TaskSpec, zero fields as the docker CLI sends them. */
function taskSpec(s: ServiceRecord | undefined) {
  return {
    ContainerSpec: {
      Image: s?.image ?? "",
      ...(s?.entrypoint ? { Command: s.entrypoint } : {}),
      ...(s && s.cmd.length > 0 ? { Args: s.cmd } : {}),
      ...(s && s.env.length > 0 ? { Env: s.env } : {}),
    },
    Resources: { Limits: {}, Reservations: {} },
    Placement: {},
    ...(s && s.networks.length > 0 ? { Networks: s.networks.map((Target) => ({ Target })) } : {}),
    ForceUpdate: 0,
  };
}

export function serviceView(
  ctx: EngineContext,
  s: ServiceRecord,
  status?: { running: number; desired: number },
) {
  const endpointSpec = {
    Mode: s.endpointMode,
    ...(s.ports.length > 0 ? { Ports: s.ports.map(portView) } : {}),
  };
  const vips = Object.entries(s.vips).map(([NetworkID, vip]) => ({
    NetworkID,
    Addr: withPrefix(ctx, NetworkID, vip),
  }));
  return {
    ID: s.id,
    Version: { Index: s.version },
    CreatedAt: s.created,
    UpdatedAt: s.updated,
    Spec: {
      Name: s.name,
      Labels: s.labels,
      TaskTemplate: taskSpec(s),
      Mode: { Replicated: { Replicas: s.replicas } },
      EndpointSpec: endpointSpec,
    },
    Endpoint: {
      Spec: endpointSpec,
      ...(s.ports.length > 0 ? { Ports: s.ports.map(portView) } : {}),
      ...(vips.length > 0 ? { VirtualIPs: vips } : {}),
    },
    ...(status
      ? { ServiceStatus: { RunningTasks: status.running, DesiredTasks: status.desired, CompletedTasks: 0 } }
      : {}),
  };
}

/** A task's state as Docker names it, from the scheduler's record and its host's report. */
function taskState(
  t: TaskRecord,
  st: TaskStatus | undefined,
): { State: string; Message: string; Err?: string } {
  if (t.host === "") return { State: "pending", Message: "pending task scheduling", Err: t.pending };
  if (!st) {
    return t.desired === "running"
      ? { State: "assigned", Message: "scheduler assigned task to node" }
      : { State: "shutdown", Message: "shutdown" };
  }
  return { State: st.state, Message: st.message, ...(st.state === "failed" ? { Err: st.message } : {}) };
}

export function taskView(
  ctx: EngineContext,
  t: TaskRecord,
  s: ServiceRecord | undefined,
  st: TaskStatus | undefined,
) {
  const local = st && st.host === ctx.cluster?.nodeName ? ctx.containers.get(st.containerId) : undefined;
  const hostPorts = (s?.ports ?? []).filter((p) => p.mode === "host");
  const running = st?.state === "running";
  return {
    ID: t.id,
    Version: { Index: 1 },
    CreatedAt: t.created,
    UpdatedAt: st?.updated ?? t.created,
    Labels: {},
    Spec: taskSpec(s),
    ServiceID: t.serviceId,
    Slot: t.slot,
    ...(t.host ? { NodeID: t.host } : {}),
    Status: {
      Timestamp: st?.updated ?? t.created,
      ...taskState(t, st),
      ...(st?.containerId
        ? {
            ContainerStatus: {
              ContainerID: st.containerId,
              PID: local?.state.pid ?? 0,
              ExitCode: local?.state.exitCode ?? 0,
            },
          }
        : {}),
      PortStatus: running && hostPorts.length > 0 ? { Ports: hostPorts.map(portView) } : {},
    },
    DesiredState: t.desired,
    NetworksAttachments: Object.entries(st?.addresses ?? {}).map(([id, address]) => ({
      Network: { ID: id, Spec: { Name: ctx.networks.get(id)?.name ?? "" } },
      Addresses: [withPrefix(ctx, id, address)],
    })),
  };
}

/** A cluster host as a swarm node: members run etcd (managers), clients do not (workers). */
export function nodeView(host: ClusterInfo["Hosts"][number], leader: string) {
  const manager = host.Role === "member";
  return {
    ID: host.Name,
    Version: { Index: 1 },
    Spec: { Labels: {}, Role: manager ? "manager" : "worker", Availability: "active" },
    Description: {
      Hostname: host.Name,
      Platform: { Architecture: arch() === "x64" ? "x86_64" : arch(), OS: "linux" },
      Engine: { EngineVersion: CTNET_VERSION },
    },
    Status: { State: host.State, Addr: host.Addr },
    ...(manager
      ? {
          ManagerStatus: {
            Leader: host.Name === leader,
            Reachability: host.State === "ready" ? "reachable" : "unreachable",
            Addr: `${host.Addr}:2379`,
          },
        }
      : {}),
  };
}
