import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bridgeSettings } from "../drivers/bridge/bridge.js";
import type { SandboxHandle } from "../drivers/driver.js";
import {
  ConflictError,
  ForbiddenError,
  InvalidParameterError,
  NotFoundError,
  NotSupportedError,
} from "../errors.js";
import type { ImageConfig } from "../images/changes.js";
import type { ImageStore } from "../images/store.js";
import {
  addressFamily,
  macFromIPv4,
  NoAvailableAddressError,
  randomMac,
  subnetContains,
} from "../ipam/index.js";
import { log } from "../log.js";
import { type ApiPortMap, exposedPorts, portBindingRequests } from "../ports/parse.js";
import {
  Consoles,
  type ContainerStreams,
  isRelayed,
  NO_STDIO,
  type StdioConfig,
} from "../runtime/console.js";
import { renderHosts, renderResolvConf } from "../runtime/etc-files.js";
import {
  type ExitStatus,
  INIT,
  launch,
  readExitCode,
  sendSignal,
  TINI,
  watchExit,
} from "../runtime/process.js";
import {
  EXIT_FILE_INSIDE,
  mountRootfs,
  PTMX_INSIDE,
  type RootfsLayout,
  rootfsLayout,
  unmountRootfs,
} from "../runtime/rootfs.js";
import type { EngineContext } from "./context.js";
import { hasEmbeddedDns } from "./dns-view.js";
import { clusterEndpoint, requireCluster } from "./global-networks.js";
import { lookup, newId, shortId } from "./ids.js";
import { randomName } from "./names.js";
import type { Networks } from "./networks.js";
import type { Sandboxes } from "./sandboxes.js";
import type {
  AttachmentConfig,
  ContainerRecord,
  EndpointRecord,
  NetworkMode,
  NetworkRecord,
  PortsConfig,
} from "./types.js";
import { Undo } from "./undo.js";

export interface EndpointRequest {
  ipv4?: string;
  ipv6?: string;
  aliases: string[];
}

export interface ContainerCreateRequest {
  name?: string;
  image: string;
  cmd: string[];
  entrypoint: string[];
  /** the request set Entrypoint (even to nothing): the image's ENTRYPOINT and CMD do not apply */
  entrypointSet: boolean;
  workingDir: string;
  env: string[];
  hostname?: string;
  domainname?: string;
  labels: Record<string, string>;
  networkMode: string;
  dns: string[];
  autoRemove: boolean;
  stdio: StdioConfig;
  /** keyed by network name or id, as Docker's NetworkingConfig.EndpointsConfig */
  endpoints: Record<string, EndpointRequest>;
  exposedPorts: Record<string, unknown>;
  portBindings: ApiPortMap;
  publishAll: boolean;
}

const NAME = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** Whether `address` is a valid address of that family (so that later subnet checks cannot throw). */
function validAddress(address: string, family: 4 | 6): boolean {
  try {
    return addressFamily(address) === family && !address.includes("/");
  } catch {
    return false;
  }
}

const now = () => new Date().toISOString();

const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * What runs, as Docker decides it: a request's Entrypoint replaces the image's ENTRYPOINT and CMD;
 * a request's Cmd replaces only the image's CMD. Environment: the image's, then the request's.
 */
function commandOf(
  req: ContainerCreateRequest,
  image: ImageConfig | undefined,
): { cmd: string[]; env: string[]; workingDir: string } {
  const entrypoint = req.entrypointSet ? req.entrypoint : (image?.Entrypoint ?? []);
  const cmd = req.cmd.length > 0 || req.entrypointSet ? req.cmd : (image?.Cmd ?? []);
  const env = new Map<string, string>();
  for (const kv of [...(image ? [DEFAULT_PATH] : []), ...(image?.Env ?? []), ...req.env]) {
    const eq = kv.indexOf("=");
    env.set(eq < 0 ? kv : kv.slice(0, eq), kv);
  }
  return {
    cmd: [...entrypoint, ...cmd].filter((a, i) => i > 0 || a !== ""),
    env: [...env.values()],
    workingDir: req.workingDir || image?.WorkingDir || "",
  };
}

/**
 * Validates what a container asks to publish. As in Docker, ports mean nothing in the host's own
 * namespace (they are dropped), and a container without a network of its own cannot publish.
 */
function portsConfig(req: ContainerCreateRequest, mode: NetworkMode): PortsConfig {
  const requests = portBindingRequests({
    exposedPorts: req.exposedPorts,
    portBindings: req.portBindings,
    publishAll: req.publishAll,
  });
  const exposed = exposedPorts(req.exposedPorts, req.portBindings);
  if (mode.kind === "host") return { exposed, requests: [], bindings: {}, publishAll: false };
  if (requests.length > 0 && mode.kind !== "bridge") {
    throw new InvalidParameterError(
      `conflicting options: port publishing and the container type network mode (${mode.kind})`,
    );
  }
  return { exposed, requests, bindings: req.portBindings, publishAll: req.publishAll };
}

/** Milliseconds spent in each phase of an operation, for the debug log. */
class PhaseTimer {
  readonly phases: Record<string, number> = {};
  private last = process.hrtime.bigint();

  mark(phase: string): void {
    const t = process.hrtime.bigint();
    this.phases[phase] = Number(t - this.last) / 1e6;
    this.last = t;
  }
}
const ZERO_TIME = "0001-01-01T00:00:00Z";

/** The embedded resolver as the container life cycle needs it. */
export interface SandboxDns {
  attach(sandboxId: string, nsPath: string): void;
  detach(sandboxId: string): void;
}

interface ExitWatch {
  done: Promise<void>;
  resolve: () => void;
}

/** Containers and their endpoints: create, start, stop, remove, connect, disconnect. */
export class Containers {
  private readonly watches = new Map<string, ExitWatch>();
  /** containers whose sandbox has the embedded resolver listening */
  private readonly resolving = new Set<string>();
  private readonly consoles = new Consoles();

  constructor(
    private readonly ctx: EngineContext,
    private readonly networks: Networks,
    private readonly sandboxes: Sandboxes,
    private readonly dns: SandboxDns,
    private readonly images: ImageStore,
  ) {}

  find(ref: string): ContainerRecord {
    const c = this.tryFind(ref);
    if (!c) throw new NotFoundError(`No such container: ${ref}`);
    return c;
  }

  tryFind(ref: string): ContainerRecord | undefined {
    return lookup(this.ctx.containers.values(), ref, "container");
  }

  list(): ContainerRecord[] {
    return [...this.ctx.containers.values()].sort((a, b) => b.created.localeCompare(a.created));
  }

  // ---- create ----

  create(req: ContainerCreateRequest): Promise<ContainerRecord> {
    return this.ctx.lock.run(async () => {
      const ctx = this.ctx;
      const image = req.image ? this.images.get(req.image) : undefined;
      const run = commandOf(req, image?.config);
      if (run.cmd.length === 0) throw new InvalidParameterError("no command specified");
      if (req.stdio.tty && !existsSync(TINI)) {
        throw new NotSupportedError(`a TTY (-t) needs ${TINI} on the host (Debian package tini)`);
      }
      const name = req.name
        ? this.freeName(req.name)
        : randomName((n) => [...ctx.containers.values()].some((c) => c.name === n));
      const id = newId();
      await this.networks.catchUp(networkRefs(req));
      const { mode, attachments } = this.resolveNetworking(req);
      if (mode.kind === "container" && req.hostname) {
        throw new InvalidParameterError("conflicting options: hostname and the network mode");
      }
      const ports = portsConfig(req, mode);
      const c: ContainerRecord = {
        id,
        name,
        created: now(),
        image: req.image,
        imageId: image?.id ?? "",
        cmd: run.cmd,
        env: run.env,
        workingDir: run.workingDir,
        hostname: req.hostname || shortId(id),
        domainname: req.domainname ?? "",
        labels: req.labels,
        networkModeText: req.networkMode || "bridge",
        networkMode: mode,
        dns: req.dns,
        autoRemove: req.autoRemove,
        stdio: req.stdio,
        attachments,
        ports,
        published: [],
        state: {
          status: "created",
          pid: 0,
          pidStartTime: 0,
          runnerPid: 0,
          exitCode: 0,
          error: "",
          startedAt: ZERO_TIME,
          finishedAt: ZERO_TIME,
        },
        sandboxPath: "",
      };

      mkdirSync(ctx.containerDataDir(id), { recursive: true, mode: 0o700 });
      // Made now so that a client can follow the log before the container starts.
      writeFileSync(this.logPath(c), "", { mode: 0o640 });
      await ctx.saveContainer(c);
      ctx.events.publish("container", "create", id, { name });
      return c;
    });
  }

  private resolveNetworking(req: ContainerCreateRequest): {
    mode: NetworkMode;
    attachments: AttachmentConfig[];
  } {
    const text = modeText(req);
    const entries = endpointEntries(req);
    if (text === "host" || text === "none" || text.startsWith("container:")) {
      const extra = entries.filter(([ref]) => ref !== text);
      if (extra.length > 0) {
        throw new InvalidParameterError(
          `conflicting options: a container in network mode "${text}" cannot be connected to other networks (${extra.map(([r]) => r).join(", ")})`,
        );
      }
      const own = req.endpoints[text];
      if (own && (own.ipv4 || own.ipv6 || own.aliases.length > 0)) {
        throw new InvalidParameterError(
          `conflicting options: IP addresses and aliases cannot be set in network mode "${text}"`,
        );
      }
      if (text === "host") return { mode: { kind: "host" }, attachments: [] };
      if (text === "none") return { mode: { kind: "none" }, attachments: [] };
      const ref = text.slice("container:".length);
      const other = this.find(ref);
      return { mode: { kind: "container", containerId: other.id }, attachments: [] };
    }
    const primary = this.networks.find(text);
    if (primary.driver === "host" || primary.driver === "null") {
      return this.resolveNetworking({ ...req, networkMode: primary.driver === "host" ? "host" : "none" });
    }
    const attachments: AttachmentConfig[] = [];
    const add = (net: NetworkRecord, r: EndpointRequest | undefined) => {
      if (attachments.some((a) => a.networkId === net.id)) return;
      attachments.push(this.attachmentFor(net, r ?? { aliases: [] }));
    };
    add(
      primary,
      req.endpoints[text] ?? entries.find(([ref]) => this.networks.tryFind(ref)?.id === primary.id)?.[1],
    );
    for (const [ref, r] of entries) add(this.networks.find(ref), r);
    return { mode: { kind: "bridge" }, attachments };
  }

  /** Validates what a container asks for on a network (static addresses, aliases) without allocating. */
  private attachmentFor(net: NetworkRecord, r: EndpointRequest): AttachmentConfig {
    if (net.driver === "host" || net.driver === "null") {
      throw new InvalidParameterError(
        `container cannot be disconnected from host network or connected to ${net.name} network`,
      );
    }
    const isDefault = net.predefined && net.driver === "bridge";
    if ((r.ipv4 || r.ipv6) && isDefault) {
      throw new InvalidParameterError("user specified IP address is supported on user defined networks only");
    }
    if (r.aliases.length > 0 && isDefault) {
      throw new InvalidParameterError(
        "network-scoped alias is supported only for containers in user defined networks",
      );
    }
    if ((r.ipv4 || r.ipv6) && !net.userSubnets) {
      throw new InvalidParameterError(
        "user specified IP address is supported only when connecting to networks with user configured subnets",
      );
    }
    for (const [family, address] of [
      [4, r.ipv4],
      [6, r.ipv6],
    ] as const) {
      if (!address) continue;
      if (!validAddress(address, family))
        throw new InvalidParameterError(`invalid IPv${family} address: ${address}`);
      const pools = net.pools.filter((p) => p.family === family);
      if (pools.length === 0)
        throw new InvalidParameterError(
          `network ${net.name} has no IPv${family} subnet for address ${address}`,
        );
      const pool = pools.find((p) => subnetContains(p.subnet, address));
      if (!pool) {
        throw new InvalidParameterError(
          `invalid address ${address}: it does not belong to any of network ${net.name}'s subnets (${pools.map((p) => p.subnet).join(", ")})`,
        );
      }
      if (pool.ipRange && !subnetContains(pool.ipRange, address)) {
        throw new InvalidParameterError(
          `invalid address ${address}: it is outside the network's --ip-range ${pool.ipRange}`,
        );
      }
    }
    return { networkId: net.id, ipv4: r.ipv4, ipv6: r.ipv6, aliases: [...new Set(r.aliases)] };
  }

  // ---- endpoints ----

  private nextIfname(containerId: string): string {
    const used = new Set(this.ctx.endpointsOf(containerId).map((e) => e.ifname));
    for (let i = 0; ; i++) if (!used.has(`eth${i}`)) return `eth${i}`;
  }

  /**
   * The endpoint that carries the sandbox's default route: the first joined non-internal one that
   * can (an overlay cannot: its containers go out through the gateway bridge).
   */
  private gatewayEndpoint(containerId: string): EndpointRecord | undefined {
    return this.ctx
      .endpointsOf(containerId)
      .find((e) => givesDefaultRoute(this.ctx.networks.get(e.networkId)));
  }

  private allocate(net: NetworkRecord, family: 4 | 6, preferred: string | undefined): string | undefined {
    const pools = net.pools.filter((p) => p.family === family);
    if (pools.length === 0) return undefined;
    if (preferred) {
      const pool = pools.find((p) => subnetContains(p.subnet, preferred));
      if (!pool)
        throw new InvalidParameterError(
          `invalid address ${preferred}: not in any subnet of network ${net.name}`,
        );
      return this.ctx.ipamOf(net).requestAddress(net.id, pool.subnet, preferred);
    }
    for (const pool of pools) {
      try {
        return this.ctx.ipamOf(net).requestAddress(net.id, pool.subnet);
      } catch (err) {
        if (!(err instanceof NoAvailableAddressError)) throw err;
      }
    }
    throw NoAvailableAddressError.forNetwork(family, net.name, net.id);
  }

  /**
   * An address for a new endpoint. On a global network the cluster must grant it too: an address
   * another host claimed first (the mirror had not heard yet) stays marked used here, and the next
   * one is tried.
   */
  private async allocateClaimed(
    net: NetworkRecord,
    family: 4 | 6,
    preferred: string | undefined,
    endpointId: string,
  ): Promise<string | undefined> {
    for (let attempt = 0; ; attempt++) {
      const address = this.allocate(net, family, preferred);
      if (!address || net.scope !== "global") return address;
      const cluster = requireCluster(this.ctx.cluster, net.driver);
      if (await cluster.claimAddress(net.id, address, endpointId)) return address;
      if (preferred) {
        this.ctx.ipamOf(net).releaseAddress(net.id, poolOf(net, address), address);
        throw new ConflictError(`address ${address} is already in use on network ${net.name}`);
      }
      if (attempt >= MAX_CLAIM_ATTEMPTS) throw NoAvailableAddressError.forNetwork(family, net.name, net.id);
    }
  }

  private async release(net: NetworkRecord, address: string | undefined): Promise<void> {
    if (!address) return;
    const pool = net.pools.find((p) => subnetContains(p.subnet, address));
    if (pool) this.ctx.ipamOf(net).releaseAddress(net.id, pool.subnet, address);
    if (net.scope === "global") await this.ctx.cluster?.releaseAddress(net.id, address);
  }

  private async connectEndpoint(
    c: ContainerRecord,
    att: AttachmentConfig,
    sandbox: SandboxHandle,
    gateway = false,
  ): Promise<EndpointRecord> {
    const ctx = this.ctx;
    const net = ctx.networks.get(att.networkId);
    if (!net) throw new NotFoundError(`network ${att.networkId} not found`);
    const driver = ctx.driver(net.driver);
    const undo = new Undo();
    try {
      const id = newId();
      const ipv4 = await this.allocateClaimed(net, 4, att.ipv4, id);
      if (ipv4) undo.push(() => this.release(net, ipv4));
      const ipv6 = await this.allocateClaimed(net, 6, att.ipv6, id);
      if (ipv6) undo.push(() => this.release(net, ipv6));
      const existing = ctx.endpointsOf(c.id);
      const ep: EndpointRecord = {
        id,
        networkId: net.id,
        containerId: c.id,
        ifname: this.nextIfname(c.id),
        hostIfname: `veth${id.slice(0, 11)}`,
        mac: ipv4 ? macFromIPv4(ipv4) : randomMac(),
        ...(ipv4 ? { ipv4 } : {}),
        ...(ipv6 ? { ipv6 } : {}),
        aliases: att.aliases,
        order: existing.reduce((m, e) => Math.max(m, e.order + 1), 0),
        ...(gateway ? { gateway } : {}),
      };
      const defaultRoute = givesDefaultRoute(net) && this.gatewayEndpoint(c.id) === undefined;
      // Recorded before the kernel work: a crash in between leaves a record whose interface is
      // missing, which start-up repairs, rather than an interface nobody knows about.
      await ctx.saveEndpoint(ep);
      undo.push(() => ctx.dropEndpoint(ep.id));
      if (this.firewallTracksPorts(net)) {
        undo.push(() => this.networks.applyFirewall());
        this.networks.applyFirewall();
      }
      await driver.join(net, ep, sandbox, defaultRoute);
      undo.push(() => driver.leave(net, ep));
      if (net.scope === "global") {
        const cluster = requireCluster(ctx.cluster, net.driver);
        undo.push(() => cluster.withdrawEndpoint(ep));
        await cluster.publishEndpoint(clusterEndpoint(cluster, ep, c));
        if (!net.internal && this.gatewayEndpoint(c.id) === undefined) {
          const gw = await this.networks.gatewayBridge();
          await this.connectEndpoint(c, { networkId: gw.id, aliases: [] }, sandbox, true);
        }
      }
      ctx.events.publish("network", "connect", net.id, { container: c.id, name: net.name, type: net.driver });
      return ep;
    } catch (err) {
      await undo.run((e) => log.error({ err: e, container: c.name }, "rollback of endpoint failed"));
      throw err;
    }
  }

  /** Frees an endpoint's addresses and record; `kernel` also removes its interface now. */
  private async releaseEndpoint(ep: EndpointRecord, kernel: boolean): Promise<void> {
    const net = this.ctx.networks.get(ep.networkId);
    if (net) {
      const driver = this.ctx.driver(net.driver);
      if (kernel) await driver.leave(net, ep);
      if (net.scope === "global") await this.ctx.cluster?.withdrawEndpoint(ep);
      await this.release(net, ep.ipv4);
      await this.release(net, ep.ipv6);
      if (driver.networkIdle && !this.ctx.endpointsOn(net.id).some((e) => e.id !== ep.id)) {
        await driver.networkIdle(net);
      }
      this.ctx.events.publish("network", "disconnect", net.id, {
        container: ep.containerId,
        name: net.name,
        type: net.driver,
      });
    }
    await this.ctx.dropEndpoint(ep.id);
    if (net && this.firewallTracksPorts(net)) this.networks.applyFirewall();
  }

  /** Only networks with ICC off name their ports in the firewall; others cost no rule change per endpoint. */
  private firewallTracksPorts(net: NetworkRecord): boolean {
    return net.driver === "bridge" && !bridgeSettings(net).icc;
  }

  connect(netRef: string, containerRef: string, r: EndpointRequest): Promise<void> {
    return this.ctx.lock.run(async () => {
      await this.networks.catchUp([netRef]);
      const net = this.networks.find(netRef);
      const c = this.find(containerRef);
      if (c.networkMode.kind !== "bridge") {
        throw new InvalidParameterError(
          `container ${c.name} uses network mode "${c.networkModeText}" and cannot be connected to other networks`,
        );
      }
      if (c.attachments.some((a) => a.networkId === net.id)) {
        throw new ForbiddenError(`endpoint with name ${c.name} already exists in network ${net.name}`);
      }
      const att = this.attachmentFor(net, r);
      c.attachments.push(att);
      await this.ctx.saveContainer(c);
      if (c.state.status !== "running") return;
      try {
        await this.connectEndpoint(c, att, this.sandboxes.handle(c.sandboxPath));
      } catch (err) {
        c.attachments = c.attachments.filter((a) => a !== att);
        await this.ctx.saveContainer(c);
        throw err;
      }
      this.writeHostsFile(c);
      // A container started on the default bridge gains name resolution when it joins a user-defined network.
      if (hasEmbeddedDns(net) && !this.resolving.has(c.id)) {
        this.startResolver(c);
        this.writeResolvConf(c);
      }
    });
  }

  disconnect(netRef: string, containerRef: string, force: boolean): Promise<void> {
    return this.ctx.lock.run(async () => {
      const net = force ? this.networks.tryFind(netRef) : this.networks.find(netRef);
      const c = this.find(containerRef);
      if (net && (net.driver === "host" || net.driver === "null")) {
        throw new InvalidParameterError(`container cannot be disconnected from ${net.name} network`);
      }
      const netId = net?.id ?? netRef;
      const ep = this.ctx.endpointsOf(c.id).find((e) => e.networkId === netId);
      const attached = c.attachments.some((a) => a.networkId === netId);
      if (!ep && !attached) {
        throw new ForbiddenError(`container ${c.name} is not connected to network ${net?.name ?? netRef}`);
      }
      if (ep) {
        const hadGateway = this.gatewayEndpoint(c.id)?.id === ep.id;
        await this.releaseEndpoint(ep, true);
        await this.dropUnneededGateway(c);
        if (hadGateway) await this.moveGateway(c);
        this.writeHostsFile(c);
      }
      c.attachments = c.attachments.filter((a) => a.networkId !== netId);
      await this.ctx.saveContainer(c);
    });
  }

  /** The gateway bridge endpoint serves overlays only: it goes with the container's last one. */
  private async dropUnneededGateway(c: ContainerRecord): Promise<void> {
    const eps = this.ctx.endpointsOf(c.id);
    if (eps.some((e) => this.ctx.networks.get(e.networkId)?.scope === "global")) return;
    for (const e of eps) if (e.gateway) await this.releaseEndpoint(e, true);
  }

  /** After the gateway's network left, the next joined non-internal network takes the default route (as Docker does). */
  private async moveGateway(c: ContainerRecord): Promise<void> {
    const next = this.gatewayEndpoint(c.id);
    if (!next) return;
    const net = this.ctx.network(next.networkId);
    await this.ctx.driver(net.driver).setDefaultRoute(net, next, this.sandboxes.handle(c.sandboxPath));
  }

  // ---- start / stop ----

  private usesEmbeddedDns(c: ContainerRecord): boolean {
    return (
      c.networkMode.kind === "bridge" &&
      this.ctx.endpointsOf(c.id).some((e) => hasEmbeddedDns(this.ctx.networks.get(e.networkId)))
    );
  }

  private writeResolvConf(c: ContainerRecord): void {
    writeFileSync(
      this.runFile(c, "resolv.conf"),
      renderResolvConf(c.dns.length > 0 ? c.dns : this.ctx.dns, this.resolving.has(c.id)),
    );
  }

  private startResolver(c: ContainerRecord): void {
    this.dns.attach(c.id, c.sandboxPath);
    this.resolving.add(c.id);
  }

  private stopResolver(c: ContainerRecord): void {
    if (!this.resolving.delete(c.id)) return;
    this.dns.detach(c.id);
  }

  private runFile(c: ContainerRecord, file: string): string {
    return join(this.ctx.containerRunDir(c.id), file);
  }

  /** The image root filesystem's layout, for a container made from an image. */
  private rootfs(c: ContainerRecord): RootfsLayout | undefined {
    if (!c.imageId) return undefined;
    return rootfsLayout(this.images.rootfsPath(c.imageId), this.ctx.containerDataDir(c.id));
  }

  /** Where the init records the exit status: in the container's own layer for an image. */
  exitFile(c: ContainerRecord): string {
    const rootfs = this.rootfs(c);
    return rootfs ? join(rootfs.upper, EXIT_FILE_INSIDE) : this.runFile(c, "exitcode");
  }

  private writeHostsFile(c: ContainerRecord): void {
    if (c.networkMode.kind !== "bridge" && c.networkMode.kind !== "none") return;
    const entries = this.ctx
      .endpointsOf(c.id)
      .flatMap((e) =>
        [e.ipv4, e.ipv6]
          .filter((a): a is string => a !== undefined)
          .map((address) => ({ address, names: [c.hostname] })),
      );
    // Written in place: the file is bind-mounted into the container, so a rename would not be seen.
    writeFileSync(this.runFile(c, "hosts"), renderHosts(entries));
  }

  /**
   * Starts a container: sandbox, endpoints, /etc files, process. Returns false when it was already
   * running (the API answers 304).
   */
  start(ref: string): Promise<boolean> {
    return this.ctx.lock.run(async () => {
      const c = this.find(ref);
      if (c.state.status === "running") return false;
      await this.startLocked(c);
      return true;
    });
  }

  private async startLocked(c: ContainerRecord): Promise<void> {
    const ctx = this.ctx;
    const undo = new Undo();
    const runDir = ctx.containerRunDir(c.id);
    const timing = new PhaseTimer();
    try {
      mkdirSync(runDir, { recursive: true, mode: 0o700 });
      let sandboxPath = "";
      let files = {
        hosts: this.runFile(c, "hosts"),
        resolv: this.runFile(c, "resolv.conf"),
        hostname: this.runFile(c, "hostname"),
      };
      const mode = c.networkMode;
      if (mode.kind === "bridge" || mode.kind === "none") {
        const sandbox = await this.sandboxes.create(c.id);
        timing.mark("sandbox");
        sandboxPath = sandbox.path;
        undo.push(async () => {
          this.sandboxes.destroy(sandbox.path);
          for (const ep of ctx.endpointsOf(c.id)) await this.releaseEndpoint(ep, false);
        });
        for (const att of c.attachments) await this.connectEndpoint(c, att, sandbox);
        timing.mark("endpoints");
        this.writeHostsFile(c);
        c.sandboxPath = sandbox.path;
        if (this.usesEmbeddedDns(c)) {
          this.startResolver(c);
          undo.push(() => this.stopResolver(c));
        }
        this.writeResolvConf(c);
        writeFileSync(files.hostname, `${c.hostname}\n`);
      } else if (mode.kind === "container") {
        const other = ctx.containers.get(mode.containerId);
        if (other?.state.status !== "running") {
          throw new ConflictError(
            `cannot join network namespace of a non running container: ${other?.name ?? mode.containerId}`,
          );
        }
        sandboxPath = other.sandboxPath;
        c.hostname = other.hostname;
        files = {
          hosts: this.runFile(other, "hosts"),
          resolv: this.runFile(other, "resolv.conf"),
          hostname: this.runFile(other, "hostname"),
        };
      } else {
        files = { hosts: "", resolv: "", hostname: "" };
      }
      const exitFile = this.exitFile(c);
      rmSync(exitFile, { force: true });
      const rootfs = this.rootfs(c);
      if (rootfs) {
        // With --net host the container reads the host's own files, as Docker gives it copies of them.
        const etc = files.hosts
          ? files
          : { hosts: "/etc/hosts", resolv: "/etc/resolv.conf", hostname: "/etc/hostname" };
        mountRootfs(rootfs, etc, INIT, c.stdio?.tty ? TINI : undefined);
        undo.push(() => unmountRootfs(rootfs));
      }
      if (c.ports.requests.length > 0) {
        c.published = await ctx.ports.reserve(c.ports.requests);
        undo.push(async () => {
          const published = c.published;
          c.published = [];
          this.networks.applyFirewall();
          await ctx.ports.release(published);
        });
        this.networks.applyFirewall();
      }
      timing.mark("files");
      const stdio =
        c.stdio && isRelayed(c.stdio)
          ? this.streams(c).prepare(rootfs && join(rootfs.merged, PTMX_INSIDE))
          : undefined;
      if (stdio) undo.push(() => stdio.abort());
      const launched = await launch({
        cmd: c.cmd,
        env: c.env,
        hostname: c.hostname,
        netnsPath: mode.kind === "host" ? undefined : sandboxPath,
        hostsPath: files.hosts,
        resolvPath: files.resolv,
        hostnamePath: files.hostname,
        logPath: join(ctx.containerDataDir(c.id), "container.log"),
        exitFile,
        ...(rootfs ? { rootfs: rootfs.merged } : {}),
        ...(c.workingDir ? { workingDir: c.workingDir } : {}),
        ...(stdio ? { stdio } : {}),
      });
      c.sandboxPath = sandboxPath;
      c.state = {
        status: "running",
        pid: launched.pid,
        pidStartTime: launched.pidStartTime,
        runnerPid: launched.runnerPid,
        exitCode: 0,
        error: "",
        startedAt: now(),
        finishedAt: ZERO_TIME,
      };
      this.watch(c, launched.exit);
      await ctx.saveContainer(c);
      timing.mark("process");
      ctx.events.publish("container", "start", c.id, { name: c.name });
      log.debug({ container: c.name, ms: timing.phases }, "container started");
    } catch (err) {
      await undo.run((e) => log.error({ err: e, container: c.name }, "rollback of container start failed"));
      c.state = { ...c.state, error: (err as Error).message };
      c.sandboxPath = "";
      await ctx.saveContainer(c).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Follows a running container until it exits: the runner's exit status when the daemon started
   * it, or (after a daemon restart) a watch on its init process.
   */
  watch(c: ContainerRecord, exit?: Promise<ExitStatus>): void {
    let resolve = () => {};
    const done = new Promise<void>((r) => {
      resolve = r;
    });
    const pid = c.state.pid;
    this.watches.set(c.id, { done, resolve });
    const ended = exit ?? new Promise<ExitStatus>((r) => watchExit(pid, r));
    void ended.then((status) => this.onExit(c.id, pid, status));
  }

  private onExit(id: string, pid: number, status: ExitStatus): Promise<void> {
    return this.ctx.lock.run(async () => {
      const c = this.ctx.containers.get(id);
      const watch = this.watches.get(id);
      if (c?.state.status !== "running" || c.state.pid !== pid) return;
      // The init's own record is the most precise; unshare reports the same code, or dies by a signal.
      const fallback = status.code >= 0 ? status.code : status.signal >= 0 ? 128 + status.signal : 137;
      try {
        await this.markExited(c, readExitCode(this.exitFile(c)) ?? fallback);
        if (c.autoRemove) await this.removeLocked(c);
      } catch (err) {
        log.error({ err, container: c.name }, "cleaning up after a container's exit failed");
      } finally {
        this.watches.delete(id);
        watch?.resolve();
      }
    });
  }

  /** Records a container's exit and takes its networking down (the sandbox, its endpoints). */
  async markExited(c: ContainerRecord, exitCode: number): Promise<void> {
    // The resolver's sockets hold the namespace alive: they go before it.
    this.stopResolver(c);
    if (c.published.length > 0) {
      const published = c.published;
      c.published = [];
      this.networks.applyFirewall();
      await this.ctx.ports.release(published);
    }
    if (c.networkMode.kind === "bridge" || c.networkMode.kind === "none") {
      if (c.sandboxPath) this.sandboxes.destroy(c.sandboxPath);
      for (const ep of this.ctx.endpointsOf(c.id)) await this.releaseEndpoint(ep, false);
    }
    const rootfs = this.rootfs(c);
    if (rootfs) unmountRootfs(rootfs);
    c.sandboxPath = "";
    c.state = {
      ...c.state,
      status: "exited",
      exitCode,
      finishedAt: now(),
      pid: 0,
      pidStartTime: 0,
      runnerPid: 0,
    };
    await this.ctx.saveContainer(c);
    this.ctx.events.publish("container", "die", c.id, { name: c.name, exitCode: String(exitCode) });
  }

  /** Resolves when the container is not running (at once if it is not). */
  async waitStopped(id: string, timeoutMs?: number): Promise<boolean> {
    const watch = this.watches.get(id);
    if (!watch) return true;
    if (timeoutMs === undefined) {
      await watch.done;
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), timeoutMs);
    });
    const result = await Promise.race([watch.done.then(() => true), timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Stops with SIGTERM, then SIGKILL after `timeoutSec`. Returns false when it was not running. */
  async stop(ref: string, timeoutSec = 10): Promise<boolean> {
    const c = this.find(ref);
    if (c.state.status !== "running") return false;
    sendSignal(c.state.pid, "SIGTERM");
    if (!(await this.waitStopped(c.id, Math.max(0, timeoutSec) * 1000))) this.killNow(c);
    await this.waitStopped(c.id);
    return true;
  }

  kill(ref: string, signal: string): Promise<void> {
    const c = this.find(ref);
    // pid 0: a run already over, whose exit is being recorded.
    if (c.state.status !== "running" || c.state.pid <= 0)
      return Promise.reject(new ConflictError(`Container ${c.id} is not running`));
    const sig = signal.startsWith("SIG") ? signal : `SIG${signal}`;
    if (sig === "SIGKILL" || signal === "9") {
      this.killNow(c);
      return this.waitStopped(c.id).then(() => undefined);
    }
    if (!/^SIG[A-Z0-9]+$/.test(sig) && !/^\d+$/.test(signal))
      throw new InvalidParameterError(`invalid signal: ${signal}`);
    try {
      process.kill(c.state.pid, /^\d+$/.test(signal) ? Number(signal) : (sig as NodeJS.Signals));
    } catch (err) {
      throw new InvalidParameterError(`cannot send signal ${signal}: ${(err as Error).message}`);
    }
    return Promise.resolve();
  }

  private killNow(c: ContainerRecord): void {
    sendSignal(c.state.runnerPid, "SIGKILL");
    sendSignal(c.state.pid, "SIGKILL");
  }

  /** A valid name no container has, without its leading slash; Docker's errors otherwise. */
  private freeName(requested: string): string {
    if (!NAME.test(requested)) {
      throw new InvalidParameterError(
        `Invalid container name (${requested}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`,
      );
    }
    const name = requested.replace(/^\//, "");
    const other = [...this.ctx.containers.values()].find((c) => c.name === name);
    if (other) {
      throw new ConflictError(
        `Conflict. The container name "/${name}" is already in use by container "${other.id}". You have to remove (or rename) that container to be able to reuse that name.`,
      );
    }
    return name;
  }

  /** Renames a container; names resolve through the embedded DNS from the next query on. */
  rename(ref: string, newName: string): Promise<void> {
    return this.ctx.lock.run(async () => {
      const c = this.find(ref);
      if (newName.replace(/^\//, "") === c.name) {
        throw new InvalidParameterError("Renaming a container with the same name as its current name");
      }
      const name = this.freeName(newName);
      const old = c.name;
      c.name = name;
      await this.ctx.saveContainer(c);
      // Other hosts resolve the container by the name its global endpoints carry.
      const cluster = this.ctx.cluster;
      if (cluster) {
        for (const ep of this.ctx.endpointsOf(c.id)) {
          if (this.ctx.networks.get(ep.networkId)?.scope === "global")
            await cluster.publishEndpoint(clusterEndpoint(cluster, ep, c));
        }
      }
      this.ctx.events.publish("container", "rename", c.id, { name, oldName: `/${old}` });
    });
  }

  // ---- remove ----

  async remove(ref: string, force: boolean): Promise<void> {
    const c = this.find(ref);
    if (c.state.status === "running") {
      if (!force) {
        throw new ConflictError(
          `cannot remove container "/${c.name}": container is running: stop the container before removing or force remove`,
        );
      }
      this.killNow(c);
      await this.waitStopped(c.id);
    }
    await this.ctx.lock.run(async () => {
      const current = this.ctx.containers.get(c.id);
      if (current) await this.removeLocked(current);
    });
  }

  private async removeLocked(c: ContainerRecord): Promise<void> {
    const ctx = this.ctx;
    const rootfs = this.rootfs(c);
    if (rootfs) unmountRootfs(rootfs);
    c.state.status = "removing";
    this.consoles.remove(c.id);
    await ctx.store.delete(`containers/${c.id}`);
    ctx.containers.delete(c.id);
    rmSync(ctx.containerRunDir(c.id), { recursive: true, force: true });
    rmSync(ctx.containerDataDir(c.id), { recursive: true, force: true });
    ctx.events.publish("container", "destroy", c.id, { name: c.name });
  }

  logPath(c: ContainerRecord): string {
    return join(this.ctx.containerDataDir(c.id), "container.log");
  }

  /** The relayed streams of a container (-i, -t, a foreground run): what clients attach to. */
  streams(c: ContainerRecord): ContainerStreams {
    return this.consoles.of(c.id, c.stdio ?? NO_STDIO, this.logPath(c));
  }

  runFiles(c: ContainerRecord): { hosts: string; resolv: string; hostname: string } {
    return {
      hosts: this.runFile(c, "hosts"),
      resolv: this.runFile(c, "resolv.conf"),
      hostname: this.runFile(c, "hostname"),
    };
  }

  /** Re-attaches a running container found at start-up, repairing missing endpoints. */
  async adopt(c: ContainerRecord): Promise<void> {
    const ctx = this.ctx;
    if (c.networkMode.kind === "bridge") {
      const sandbox = this.sandboxes.handle(c.sandboxPath);
      for (const ep of ctx.endpointsOf(c.id)) {
        const net = ctx.networks.get(ep.networkId);
        if (!net) {
          await ctx.dropEndpoint(ep.id);
          continue;
        }
        const driver = ctx.driver(net.driver);
        if (await driver.endpointPresent(net, ep, sandbox)) continue;
        log.warn({ container: c.name, network: net.name }, "endpoint missing after restart: recreating it");
        await sandbox.netlink.deleteLink(ep.ifname);
        await driver.join(net, ep, sandbox, this.gatewayEndpoint(c.id)?.id === ep.id);
      }
      for (const att of c.attachments) {
        if (ctx.endpointsOf(c.id).some((e) => e.networkId === att.networkId)) continue;
        if (!ctx.networks.has(att.networkId)) continue;
        log.warn({ container: c.name, network: att.networkId }, "endpoint lost in a crash: connecting again");
        await this.connectEndpoint(c, att, sandbox);
      }
      // The default route may be what a crash cut short; adding an existing one is harmless.
      const gateway = this.gatewayEndpoint(c.id);
      const gatewayNet = gateway && ctx.networks.get(gateway.networkId);
      if (gateway && gatewayNet)
        await ctx.driver(gatewayNet.driver).setDefaultRoute(gatewayNet, gateway, sandbox);
      this.writeHostsFile(c);
      if (this.usesEmbeddedDns(c)) this.startResolver(c);
    }
    if (c.stdio && isRelayed(c.stdio)) {
      try {
        this.streams(c).reopen(c.state.runnerPid);
      } catch (err) {
        log.warn({ err, container: c.name }, "cannot take the container's streams back: its output is lost");
      }
    }
    this.watch(c);
  }
}

/** Overlays never carry the default route; the gateway bridge does for their containers. */
function givesDefaultRoute(net: NetworkRecord | undefined): boolean {
  return net !== undefined && !net.internal && net.driver !== "overlay";
}

/** Bounds the retries when other hosts keep claiming the address this host picked. */
const MAX_CLAIM_ATTEMPTS = 256;

function poolOf(net: NetworkRecord, address: string): string {
  return net.pools.find((p) => subnetContains(p.subnet, address))?.subnet ?? "";
}

const modeText = (req: ContainerCreateRequest) =>
  req.networkMode === "" || req.networkMode === "default" ? "bridge" : req.networkMode;

/** Docker's CLI names the default network "default" in EndpointsConfig as in NetworkMode. */
const endpointEntries = (req: ContainerCreateRequest) =>
  Object.entries(req.endpoints).map(([ref, r]) => [ref === "default" ? "bridge" : ref, r] as const);

/** The networks a create request names. */
function networkRefs(req: ContainerCreateRequest): string[] {
  const text = modeText(req);
  const special = text === "host" || text === "none" || text.startsWith("container:");
  return [...(special ? [] : [text]), ...endpointEntries(req).map(([ref]) => ref)];
}
