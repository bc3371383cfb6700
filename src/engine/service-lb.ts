/**
 * Services' load balancing on this host (issue 7): VIPs in client sandboxes and the routing mesh.
 *
 * From the cluster's mirror of services, tasks and task statuses it derives what every local
 * sandbox's `ctnet_lb` table must hold (firewall/lb.ts) and sends only the differences. Only tasks
 * whose status is "running" (and that are still meant to run) receive connections, so a task whose
 * process dies leaves every table as soon as its host reports it, and a dead host's tasks leave
 * with its lease.
 *
 * - VIPs: every running container's sandbox on a network with vip-mode services gets a client
 *   table with those services' VIPs on that network (not the ingress network's: nothing resolves
 *   to those). A sandbox joining such a network gets its table before the container's process
 *   starts (the engine's "network connect" event, published under the engine's lock, is heard
 *   synchronously). Without services nothing here runs on a container's start beyond one map
 *   lookup.
 * - Routing mesh: while any service publishes a port in ingress mode, every host keeps the ingress
 *   sandbox (ingress-sandbox.ts), reserves the published ports like a container's published ports
 *   (ports/allocator.ts: a port another process or container holds is refused, not shadowed), and
 *   DNATs them (the firewall's published-port maps, through ctx.ingressPorts) to the sandbox, whose
 *   ingress table balances them over the tasks' addresses on the ingress network.
 *
 * For the services layer's create, update and rm (ports are cluster-wide, so a conflict must be
 * refused before the record is written):
 * - `reserveIngressPorts(service)` before writing a create or an update: refuses (ConflictError) a
 *   port another service publishes, or that this host cannot take (a container's published port,
 *   another process); otherwise holds the ports on this host, all or none.
 * - `releaseIngressPorts(serviceId, keep)` after a rm, after an update that dropped ports (keep =
 *   the new record's ports), or after a failed write (keep = the old record's ports, or none).
 * Every other host takes and releases the ports itself as it hears of the change; a port a host
 * cannot take is logged there, and that host does not serve it.
 */
import { isIPv4 } from "node:net";
import type { Cluster } from "../cluster/cluster.js";
import type { ServicePort, ServiceRecord } from "../cluster/types.js";
import { ConflictError } from "../errors.js";
import {
  clientElements,
  EMPTY,
  ingressElements,
  LbApplier,
  type LbElements,
  type LbMeshPort,
  type LbVip,
} from "../firewall/lb.js";
import type { FirewallPort } from "../firewall/model.js";
import { isNetnsMounted } from "../kernel/netns.js";
import { runNft } from "../kernel/nft.js";
import { log } from "../log.js";
import type { PortBinding } from "../ports/types.js";
import type { EngineContext } from "./context.js";
import type { EngineEvent } from "./events.js";
import { IngressSandbox } from "./ingress-sandbox.js";
import type { Networks } from "./networks.js";
import type { Sandboxes } from "./sandboxes.js";
import { INGRESS_NETWORK } from "./swarm.js";
import type { NetworkRecord } from "./types.js";

/** A mesh port as the services ask for it: which service, and where its tasks are. */
export interface MeshPort extends LbMeshPort {
  serviceId: string;
}

export interface LbModel {
  /** network id → service id → the service's VIP there, with its running tasks' addresses */
  vips: Map<string, Map<string, LbVip>>;
  /** ports published in ingress mode, with the running tasks' addresses on the ingress network */
  mesh: MeshPort[];
}

type ServiceView = Pick<Cluster, "services" | "tasks" | "taskStatuses">;

const checked = new Map<string, string>();

/** The IPv4 address of "a.b.c.d" or "a.b.c.d/len", else "" (IPv6 is not balanced). Memoised: the same few thousand texts come back on every pass. */
function ipv4Of(text: string | undefined): string {
  if (text === undefined) return "";
  let a = checked.get(text);
  if (a === undefined) {
    if (checked.size >= 65536) checked.clear();
    const plain = text.split("/")[0] ?? "";
    a = isIPv4(plain) ? plain : "";
    checked.set(text, a);
  }
  return a;
}

/** What every load balancer of the cluster must do, from the services' desired and reported state. */
export function lbModel(view: ServiceView, ingressId: string | undefined): LbModel {
  const running = new Map<string, Record<string, string>[]>();
  for (const task of view.tasks.values()) {
    const status = view.taskStatuses.get(task.id);
    if (task.desired !== "running" || status?.state !== "running") continue;
    const list = running.get(task.serviceId);
    if (list) list.push(status.addresses);
    else running.set(task.serviceId, [status.addresses]);
  }
  const on = (serviceId: string, networkId: string) => {
    const out: string[] = [];
    for (const a of running.get(serviceId) ?? []) {
      const ip = ipv4Of(a[networkId]);
      if (ip) out.push(ip);
    }
    return out;
  };
  const model: LbModel = { vips: new Map(), mesh: [] };
  for (const s of view.services.values()) {
    if (s.endpointMode === "vip") {
      for (const networkId of s.networks) {
        const vip = ipv4Of(s.vips[networkId]);
        if (networkId === ingressId || !vip) continue;
        let onNet = model.vips.get(networkId);
        if (!onNet) {
          onNet = new Map();
          model.vips.set(networkId, onNet);
        }
        onNet.set(s.id, { vip, backends: on(s.id, networkId) });
      }
    }
    for (const p of s.ports) {
      if (p.mode !== "ingress") continue;
      const backends = ingressId ? on(s.id, ingressId) : [];
      model.mesh.push({ serviceId: s.id, proto: p.protocol, port: p.published, target: p.target, backends });
    }
  }
  return model;
}

interface Reservation {
  serviceId: string;
  binding: PortBinding;
  /** taken for a create or update the mirror has not shown yet: only releaseIngressPorts frees it */
  pending: boolean;
}

const portKey = (proto: string, port: number) => `${proto}/${port}`;

export class ServiceLb {
  private readonly applier = new LbApplier(runNft);
  readonly ingress: IngressSandbox;
  /** network id → "network service" → that service's part of client tables (see clientParts) */
  private parts = new Map<string, Map<string, LbElements>>();
  private meshPart: LbElements = EMPTY;
  /** "proto/port" → the mesh port this host holds */
  private readonly reserved = new Map<string, Reservation>();
  /** mesh ports this host could not take, already reported */
  private readonly refused = new Set<string>();
  private queued = false;
  private started = false;

  constructor(
    private readonly ctx: EngineContext,
    private readonly networks: Networks,
    private readonly sandboxes: Sandboxes,
  ) {
    this.ingress = new IngressSandbox(ctx, networks);
  }

  /** Registers with the engine; called before the cluster is followed, so no change is missed. */
  listen(): void {
    this.ctx.serviceHooks.add(() => this.schedule());
    this.ctx.events.on("event", (e) => this.onEvent(e));
  }

  /** Start-up, once the cluster is followed: one full pass, also over tables a previous run left. */
  async start(): Promise<void> {
    this.started = true;
    await this.ctx.lock.run(() => this.sync(true));
  }

  /** Changes come in bursts (a scale writes several tasks and statuses): one pass takes them all. */
  private schedule(): void {
    if (!this.started || this.queued) return;
    this.queued = true;
    void this.ctx.lock
      .run(async () => {
        this.queued = false;
        await this.sync(false);
      })
      .catch((err) => log.error({ err }, "service load balancing not updated"));
  }

  private async sync(startup: boolean): Promise<void> {
    const cluster = this.ctx.cluster;
    const ingressNet = cluster ? this.ingressNetwork() : undefined;
    const model = cluster ? lbModel(cluster, ingressNet?.id) : { vips: new Map(), mesh: [] };
    this.parts = clientParts(this.parts, model.vips);
    await this.syncMesh(cluster, ingressNet, model.mesh);
    this.syncClients(startup);
  }

  private ingressNetwork(): NetworkRecord | undefined {
    for (const n of this.ctx.networks.values())
      if (n.scope === "global" && n.name === INGRESS_NETWORK) return n;
    return undefined;
  }

  // ---- client sandboxes ----

  private syncClients(startup: boolean): void {
    const networksOf = new Map<string, string[]>();
    for (const ep of this.ctx.endpoints.values()) {
      const list = networksOf.get(ep.containerId);
      if (list) list.push(ep.networkId);
      else networksOf.set(ep.containerId, [ep.networkId]);
    }
    const seen = new Set<string>([this.ingress.path]);
    for (const c of this.ctx.containers.values()) {
      if (c.state.status !== "running" || c.networkMode.kind !== "bridge" || !c.sandboxPath) continue;
      seen.add(c.sandboxPath);
      const nets = networksOf.get(c.id) ?? [];
      // A previous run may have left a table in a sandbox on a global network that needs none now.
      const stale = startup && nets.some((n) => this.ctx.networks.get(n)?.scope === "global");
      this.applyClient(c.sandboxPath, nets, stale);
    }
    for (const path of this.applier.paths()) if (!seen.has(path)) this.applier.forget(path);
  }

  private applyClient(path: string, networkIds: string[], clearStale = false): void {
    const want = new Map<string, LbElements>();
    for (const id of networkIds) for (const [key, part] of this.parts.get(id) ?? []) want.set(key, part);
    try {
      if (want.size === 0 && !this.applier.has(path)) {
        if (clearStale) this.applier.remove(path);
        return;
      }
      this.applier.apply(path, "client", want);
    } catch (err) {
      log.error({ err, sandbox: path }, "cannot update the sandbox's service load balancer");
    }
  }

  /**
   * A sandbox joined or left a network. Connects are published under the engine's lock before
   * the container's process starts, so its VIPs work from its first instruction.
   */
  private onEvent(e: EngineEvent): void {
    if (e.Type !== "network" || (e.Action !== "connect" && e.Action !== "disconnect")) return;
    const containerId = e.Actor.Attributes.container;
    if (!containerId) return;
    const path = this.sandboxes.pathFor(containerId);
    if (e.Action === "connect" ? !this.parts.has(e.Actor.ID) : !this.applier.has(path)) return;
    const c = this.ctx.containers.get(containerId);
    if (c?.networkMode.kind !== "bridge" || !isNetnsMounted(path)) {
      this.applier.forget(path);
      return;
    }
    this.applyClient(
      path,
      this.ctx.endpointsOf(containerId).map((ep) => ep.networkId),
    );
  }

  // ---- routing mesh ----

  private async syncMesh(
    cluster: Cluster | undefined,
    ingressNet: NetworkRecord | undefined,
    mesh: MeshPort[],
  ): Promise<void> {
    const served = await this.syncReservations(mesh);
    if (cluster && ingressNet && mesh.length > 0) {
      try {
        await this.ingress.ensure(ingressNet);
      } catch (err) {
        log.error({ err }, "cannot make the routing mesh's ingress sandbox");
      }
    } else if (this.ingress.exists()) {
      this.applier.forget(this.ingress.path);
      await this.ingress.remove();
    }
    const gw = this.ingress.gateway();
    if (gw) {
      const part = ingressElements(served);
      if (!sameElements(part, this.meshPart)) this.meshPart = part;
      try {
        this.applier.apply(this.ingress.path, "ingress", new Map([["mesh", this.meshPart]]));
      } catch (err) {
        log.error({ err }, "cannot update the routing mesh's load balancer");
      }
    }
    const ports: FirewallPort[] = gw
      ? served.map((p) => ({
          proto: p.proto,
          hostIp: "0.0.0.0",
          hostPort: p.port,
          containerIp: gw.address,
          containerPort: p.port,
          bridge: gw.bridge,
        }))
      : [];
    const key = (list: FirewallPort[]) => list.map((p) => `${p.proto}/${p.hostPort}>${p.containerIp}`).join();
    if (key(ports) !== key(this.ctx.ingressPorts)) {
      this.ctx.ingressPorts = ports;
      this.networks.applyFirewall();
    }
  }

  /** Takes the ports the services publish, frees the ones they no longer do; returns those held. */
  private async syncReservations(mesh: MeshPort[]): Promise<MeshPort[]> {
    const served: MeshPort[] = [];
    const wanted = new Set<string>();
    for (const p of mesh) {
      const key = portKey(p.proto, p.port);
      if (wanted.has(key)) continue;
      wanted.add(key);
      const held = this.reserved.get(key);
      if (held?.serviceId === p.serviceId) {
        held.pending = false;
        served.push(p);
        continue;
      }
      if (held) continue;
      try {
        this.reserved.set(key, { serviceId: p.serviceId, binding: await this.take(p), pending: false });
        this.refused.delete(key);
        served.push(p);
      } catch (err) {
        if (!this.refused.has(key)) {
          this.refused.add(key);
          log.error({ err, port: key, service: p.serviceId }, "this host cannot publish the service's port");
        }
      }
    }
    for (const [key, r] of this.reserved) {
      if (wanted.has(key) || r.pending) continue;
      this.reserved.delete(key);
      await this.ctx.ports.release([r.binding]);
    }
    for (const key of this.refused) if (!wanted.has(key)) this.refused.delete(key);
    return served;
  }

  private async take(p: { proto: "tcp" | "udp"; port: number; target: number }): Promise<PortBinding> {
    const [binding] = await this.ctx.ports.reserve([
      {
        proto: p.proto,
        hostIp: "0.0.0.0",
        hostPortStart: p.port,
        hostPortEnd: p.port,
        containerPort: p.target,
      },
    ]);
    if (!binding) throw new ConflictError(`cannot reserve port ${p.port}/${p.proto}`);
    return binding;
  }

  /** See the module's comment: call before writing a service create or update. */
  async reserveIngressPorts(service: ServiceRecord): Promise<void> {
    const ports = service.ports.filter((p) => p.mode === "ingress");
    for (const p of ports) {
      for (const other of this.ctx.cluster?.services.values() ?? []) {
        if (other.id === service.id) continue;
        if (other.ports.some((o) => o.protocol === p.protocol && o.published === p.published))
          throw new ConflictError(
            `port ${p.published}/${p.protocol} is already published by service ${other.name}`,
          );
      }
    }
    const taken: string[] = [];
    try {
      for (const p of ports) {
        const key = portKey(p.protocol, p.published);
        const held = this.reserved.get(key);
        if (held?.serviceId === service.id) continue;
        if (held) {
          const by = this.ctx.cluster?.services.get(held.serviceId)?.name ?? held.serviceId;
          throw new ConflictError(`port ${p.published}/${p.protocol} is already published by service ${by}`);
        }
        const binding = await this.take({ proto: p.protocol, port: p.published, target: p.target });
        this.reserved.set(key, { serviceId: service.id, binding, pending: true });
        taken.push(key);
      }
    } catch (err) {
      for (const key of taken) {
        const r = this.reserved.get(key);
        this.reserved.delete(key);
        if (r) await this.ctx.ports.release([r.binding]);
      }
      throw err;
    }
  }

  /** See the module's comment: frees the service's mesh ports on this host, but those in `keep`. */
  async releaseIngressPorts(serviceId: string, keep: ServicePort[] = []): Promise<void> {
    const kept = new Set(
      keep.filter((p) => p.mode === "ingress").map((p) => portKey(p.protocol, p.published)),
    );
    for (const [key, r] of this.reserved) {
      if (r.serviceId !== serviceId || kept.has(key)) continue;
      this.reserved.delete(key);
      await this.ctx.ports.release([r.binding]);
    }
  }
}

function sameElements(a: LbElements, b: LbElements): boolean {
  const text = (e: LbElements) =>
    `${e.vips.join()}|${e.backends.join()}|${e.meshPorts.join()}|${e.mesh.join()}`;
  return text(a) === text(b);
}

/**
 * The client tables' parts: one per service and network, keeping last pass's object where nothing
 * changed, so that the applier compares and sends only what a change touched. Adding the 1000th
 * service then costs one part's elements, not the network's whole table.
 */
export function clientParts(
  before: Map<string, Map<string, LbElements>>,
  vips: Map<string, Map<string, LbVip>>,
): Map<string, Map<string, LbElements>> {
  const out = new Map<string, Map<string, LbElements>>();
  for (const [networkId, services] of vips) {
    const had = before.get(networkId);
    const parts = new Map<string, LbElements>();
    for (const [serviceId, v] of services) {
      const key = `${networkId} ${serviceId}`;
      const old = had?.get(key);
      const sig = signature(v);
      if (old && signatures.get(old) === sig) {
        parts.set(key, old);
        continue;
      }
      try {
        const part = clientElements([v]);
        signatures.set(part, sig);
        parts.set(key, part);
      } catch (err) {
        log.error(
          { err, network: networkId, service: serviceId },
          "a service's VIP or task address is invalid",
        );
      }
    }
    out.set(networkId, parts);
  }
  return out;
}

/** What a part was made from: its VIP and its (sorted) backends. */
const signatures = new WeakMap<LbElements, string>();

function signature(v: LbVip): string {
  return `${v.vip} ${[...v.backends].sort().join(" ")}`;
}
