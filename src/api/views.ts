import type { EngineContext } from "../engine/context.js";
import { shortId } from "../engine/ids.js";
import { endpointGateway } from "../engine/networks.js";
import type { ContainerRecord, EndpointRecord, NetworkRecord } from "../engine/types.js";
import { portMapView, portSummaries } from "../ports/parse.js";

/** Builds the Docker Engine API's JSON shapes from ctnet's records. */

const prefixLen = (cidr: string | undefined) => (cidr ? Number(cidr.slice(cidr.indexOf("/") + 1)) : 0);

function poolOf(net: NetworkRecord, family: 4 | 6) {
  return net.pools.find((p) => p.family === family);
}

/**
 * Docker's `Peers` of a global network: the hosts with endpoints on it, as the cluster store has
 * them. Docker leaves the field out when there are none.
 */
function peersOf(ctx: EngineContext, net: NetworkRecord): { Name: string; IP: string }[] | undefined {
  if (net.scope !== "global" || !ctx.cluster) return undefined;
  const hosts = new Map<string, string>();
  for (const e of ctx.cluster.endpointsOn(net.id)) hosts.set(e.host, e.hostAddr);
  if (hosts.size === 0) return undefined;
  return [...hosts].sort(([a], [b]) => a.localeCompare(b)).map(([Name, IP]) => ({ Name, IP }));
}

export function networkView(ctx: EngineContext, net: NetworkRecord, withContainers = true) {
  const containers: Record<string, unknown> = {};
  if (withContainers) {
    for (const ep of ctx.endpointsOn(net.id)) {
      const c = ctx.containers.get(ep.containerId);
      containers[ep.containerId] = {
        Name: c?.name ?? "",
        EndpointID: ep.id,
        MacAddress: ep.mac,
        IPv4Address: ep.ipv4 ? `${ep.ipv4}/${prefixLen(poolOf(net, 4)?.subnet)}` : "",
        IPv6Address: ep.ipv6 ? `${ep.ipv6}/${prefixLen(poolOf(net, 6)?.subnet)}` : "",
      };
    }
  }
  const peers = peersOf(ctx, net);
  return {
    Name: net.name,
    Id: net.id,
    Created: net.created,
    Scope: net.scope,
    Driver: net.driver,
    EnableIPv4: net.enableIPv4,
    EnableIPv6: net.enableIPv6,
    IPAM: {
      Driver: "default",
      Options: Object.keys(net.ipamOptions).length > 0 ? net.ipamOptions : null,
      Config: net.pools.map((p) => ({
        Subnet: p.subnet,
        ...(p.ipRange ? { IPRange: p.ipRange } : {}),
        Gateway: p.gateway,
        ...(Object.keys(p.auxAddresses).length > 0 ? { AuxiliaryAddresses: p.auxAddresses } : {}),
      })),
    },
    Internal: net.internal,
    Attachable: net.attachable,
    Ingress: false,
    ConfigFrom: { Network: "" },
    ConfigOnly: false,
    Containers: containers,
    Options: net.options,
    Labels: net.labels,
    ...(peers ? { Peers: peers } : {}),
  };
}

function endpointSettingsView(
  ctx: EngineContext,
  c: ContainerRecord,
  networkId: string,
  ep: EndpointRecord | undefined,
) {
  const net = ctx.networks.get(networkId);
  const att = c.attachments.find((a) => a.networkId === networkId);
  const v4 = net && poolOf(net, 4);
  const v6 = net && poolOf(net, 6);
  const ipam =
    att && (att.ipv4 || att.ipv6) ? { IPv4Address: att.ipv4 ?? "", IPv6Address: att.ipv6 ?? "" } : null;
  return {
    IPAMConfig: ipam,
    Links: null,
    Aliases: att && att.aliases.length > 0 ? att.aliases : null,
    MacAddress: ep?.mac ?? "",
    DriverOpts: null,
    GwPriority: 0,
    NetworkID: networkId,
    EndpointID: ep?.id ?? "",
    Gateway: ep?.ipv4 && v4 && !net.internal ? endpointGateway(net, v4) : "",
    IPAddress: ep?.ipv4 ?? "",
    IPPrefixLen: ep?.ipv4 ? prefixLen(v4?.subnet) : 0,
    IPv6Gateway: ep?.ipv6 && v6 && !net.internal ? endpointGateway(net, v6) : "",
    GlobalIPv6Address: ep?.ipv6 ?? "",
    GlobalIPv6PrefixLen: ep?.ipv6 ? prefixLen(v6?.subnet) : 0,
    DNSNames: net && !net.predefined ? [c.name, shortId(c.id), ...(att?.aliases ?? [])] : null,
  };
}

function containerNetworks(
  ctx: EngineContext,
  c: ContainerRecord,
): Record<string, ReturnType<typeof endpointSettingsView>> {
  // The gateway bridge endpoint of a container on overlays is ctnet's, not one of its networks (as in Docker).
  const eps = ctx.endpointsOf(c.id).filter((e) => !e.gateway);
  const out: Record<string, ReturnType<typeof endpointSettingsView>> = {};
  const mode = c.networkMode.kind;
  if (mode === "host" || mode === "none") {
    const net = [...ctx.networks.values()].find(
      (n) => n.predefined && n.driver === (mode === "host" ? "host" : "null"),
    );
    if (net) out[net.name] = endpointSettingsView(ctx, c, net.id, undefined);
    return out;
  }
  for (const att of c.attachments) {
    const net = ctx.networks.get(att.networkId);
    out[net?.name ?? att.networkId] = endpointSettingsView(
      ctx,
      c,
      att.networkId,
      eps.find((e) => e.networkId === att.networkId),
    );
  }
  return out;
}

/** Whether published ports also answer over IPv6: the endpoint they go to has an IPv6 address. */
function publishesIPv6(ctx: EngineContext, c: ContainerRecord): boolean {
  const ep = ctx.endpointsOf(c.id).find((e) => !ctx.networks.get(e.networkId)?.internal);
  return ep?.ipv6 !== undefined;
}

function statusText(c: ContainerRecord): string {
  const ago = (iso: string) => humanDuration(Date.now() - Date.parse(iso));
  switch (c.state.status) {
    case "running":
      return `Up ${ago(c.state.startedAt)}`;
    case "exited":
      return `Exited (${c.state.exitCode}) ${ago(c.state.finishedAt)} ago`;
    case "removing":
      return "Removal In Progress";
    default:
      return "Created";
  }
}

export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 1) return "Less than a second";
  if (s < 60) return `${s} second${s === 1 ? "" : "s"}`;
  const m = Math.round(s / 60);
  if (m < 60) return m === 1 ? "About a minute" : `${m} minutes`;
  const h = Math.round(m / 60);
  if (h < 48) return h === 1 ? "About an hour" : `${h} hours`;
  return `${Math.round(h / 24)} days`;
}

export function containerView(
  ctx: EngineContext,
  c: ContainerRecord,
  files: { hosts: string; resolv: string; hostname: string; log: string },
) {
  const networks = containerNetworks(ctx, c);
  const first = Object.values(networks)[0];
  const running = c.state.status === "running";
  const [path, ...args] = c.cmd;
  return {
    Id: c.id,
    Created: c.created,
    Path: path ?? "",
    Args: args,
    State: {
      Status: c.state.status,
      Running: running,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: c.state.pid,
      ExitCode: c.state.exitCode,
      Error: c.state.error,
      StartedAt: c.state.startedAt,
      FinishedAt: c.state.finishedAt,
    },
    Image: c.image,
    ResolvConfPath: files.resolv,
    HostnamePath: files.hostname,
    HostsPath: files.hosts,
    LogPath: files.log,
    Name: `/${c.name}`,
    RestartCount: 0,
    Driver: "",
    Platform: "linux",
    MountLabel: "",
    ProcessLabel: "",
    AppArmorProfile: "",
    HostConfig: {
      NetworkMode: c.networkModeText,
      Dns: c.dns,
      AutoRemove: c.autoRemove,
      PortBindings: c.ports.bindings,
      PublishAllPorts: c.ports.publishAll,
      RestartPolicy: { Name: "no", MaximumRetryCount: 0 },
    },
    Config: {
      Hostname: c.hostname,
      Domainname: c.domainname,
      User: "",
      Env: c.env,
      Cmd: c.cmd,
      Image: c.image,
      Labels: c.labels,
      Tty: c.stdio?.tty ?? false,
      OpenStdin: c.stdio?.openStdin ?? false,
      StdinOnce: c.stdio?.stdinOnce ?? false,
      AttachStdin: c.stdio?.attachStdin ?? false,
      AttachStdout: c.stdio?.attachStdout ?? false,
      AttachStderr: c.stdio?.attachStderr ?? false,
      ExposedPorts: Object.fromEntries(c.ports.exposed.map((p) => [p, {}])),
    },
    NetworkSettings: {
      Bridge: "",
      SandboxID: c.sandboxPath ? shortId(c.id) : "",
      SandboxKey: c.sandboxPath,
      Ports: running ? portMapView(c.ports.exposed, c.published, publishesIPv6(ctx, c)) : {},
      HairpinMode: false,
      Gateway: first?.Gateway ?? "",
      IPAddress: first?.IPAddress ?? "",
      IPPrefixLen: first?.IPPrefixLen ?? 0,
      IPv6Gateway: first?.IPv6Gateway ?? "",
      GlobalIPv6Address: first?.GlobalIPv6Address ?? "",
      GlobalIPv6PrefixLen: first?.GlobalIPv6PrefixLen ?? 0,
      MacAddress: first?.MacAddress ?? "",
      Networks: networks,
    },
    Mounts: [],
  };
}

export function containerSummary(ctx: EngineContext, c: ContainerRecord) {
  return {
    Id: c.id,
    Names: [`/${c.name}`],
    Image: c.image,
    ImageID: "",
    Command: c.cmd.join(" "),
    Created: Math.floor(Date.parse(c.created) / 1000),
    Ports: portSummaries(c.ports.exposed, c.published, publishesIPv6(ctx, c)),
    Labels: c.labels,
    State: c.state.status,
    Status: statusText(c),
    HostConfig: { NetworkMode: c.networkModeText },
    NetworkSettings: { Networks: containerNetworks(ctx, c) },
    Mounts: [],
  };
}
