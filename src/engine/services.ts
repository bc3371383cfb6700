/**
 * Swarm-style services on a ctnet cluster. A service's desired state is a ServiceRecord in the
 * cluster store; the leader's scheduler (service-leader.ts, placement in scheduler.ts) turns it
 * into TaskRecords assigned to hosts; each host's task agent (task-agent.ts) runs its tasks as
 * containers and reports them as TaskStatus records on its lease.
 *
 * Contract with the load balancing (engine/service-lb.ts, firewall/lb*.ts):
 * - this module creates the global overlay network `ingress` (10.255.0.0/16, Docker's default) when
 *   a service first publishes a port in ingress mode, through the normal global network creation,
 *   and the network cannot be removed while a service uses it;
 * - every task of a service with ingress-mode ports is attached to `ingress` (as well as to the
 *   service's own networks);
 * - `ServiceRecord.vips` holds the service's virtual IP on each of its networks and, when it
 *   publishes in ingress mode, on `ingress` (vip mode only); they are claimed in the cluster store
 *   without lease when the service is made and released when it is removed;
 * - a TaskStatus in state "running" means the task takes traffic, at `addresses` (network id →
 *   IPv4 address, `ingress` included); a task about to stop is reported "shutdown" first.
 * The load balancing reads these, and owns the `ingress` network's sandbox on each host and the
 * host-side publishing of ingress-mode ports. Host-mode ports are ordinary port bindings of the
 * task's container.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Cluster, ServiceChange } from "../cluster/cluster.js";
import { addressKey, serviceKey, serviceNameKey, servicePortKey } from "../cluster/keys.js";
import type { ServicePort, ServiceRecord, TaskRecord, TaskStatus } from "../cluster/types.js";
import {
  ConflictError,
  ForbiddenError,
  InvalidParameterError,
  NotFoundError,
  NotSupportedError,
  UnavailableError,
} from "../errors.js";
import type { ImageStore } from "../images/store.js";
import { NoAvailableAddressError } from "../ipam/index.js";
import { log } from "../log.js";
import type { Containers } from "./containers.js";
import type { EngineContext } from "./context.js";
import { randomName } from "./names.js";
import type { Networks } from "./networks.js";
import { ServiceLeader } from "./service-leader.js";
import { INGRESS_NETWORK, INGRESS_SUBNET, isIngress, newObjectId, SWARM_INTERNAL_LABEL } from "./swarm.js";
import { TaskAgent } from "./task-agent.js";
import type { NetworkRecord } from "./types.js";

/** Docker's range for ingress ports a service publishes without choosing one. */
const AUTO_PORTS = { first: 30000, last: 32767 };
/** swarmkit's rule: a service name is a DNS name component. */
const SERVICE_NAME = /^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$/;
const VIP_ATTEMPTS = 256;

/** What a client asks for: a service without what the store adds; networks by name or id, published 0 = pick one (ingress mode). */
export type ServiceSpec = Omit<ServiceRecord, "id" | "created" | "updated" | "version" | "vips">;

/** The routing mesh's hold on published ports on this host (engine/service-lb.ts). */
export interface MeshPorts {
  /** Refuses (ConflictError) a port this host cannot publish; else holds the service's ingress ports. */
  reserveIngressPorts(service: ServiceRecord): Promise<void>;
  /** Frees the service's ingress ports on this host, but those in `keep`. */
  releaseIngressPorts(serviceId: string, keep?: ServicePort[]): Promise<void>;
}

export type ServiceHook = (change: ServiceChange | { what: "joined" } | { what: "left" }) => void;

/** The services API of the engine: desired state in, records out. */
export class Services {
  readonly leader: ServiceLeader;
  readonly agent: TaskAgent;

  constructor(
    private readonly ctx: EngineContext,
    private readonly networks: Networks,
    containers: Containers,
    private readonly images: ImageStore,
    private readonly mesh: MeshPorts,
  ) {
    this.leader = new ServiceLeader(ctx);
    this.agent = new TaskAgent(ctx, containers);
  }

  /** Hooks the leader and the agent to the cluster; before the engine connects, as "joined" comes then. */
  listen(): void {
    const hook: ServiceHook = (change) => {
      this.leader.onChange(change);
      this.agent.onChange(change);
    };
    this.ctx.serviceHooks.add(hook);
    this.agent.listen();
  }

  close(): void {
    this.leader.close();
    this.agent.close();
  }

  /** The cluster, or Docker's 503 for swarm calls outside a swarm. */
  requireCluster(): Cluster {
    const cluster = this.ctx.cluster;
    if (!cluster) {
      throw new UnavailableError(
        "this host is not in a cluster: services need one, run `ctnet cluster init` (or `ctnet cluster join ADDR`) first",
      );
    }
    return cluster;
  }

  list(): ServiceRecord[] {
    return [...this.requireCluster().services.values()].sort((a, b) => a.created.localeCompare(b.created));
  }

  /** Docker's lookup: full id, then name, then a unique id prefix. */
  find(ref: string): ServiceRecord {
    const all = this.list();
    const exact = all.find((s) => s.id === ref) ?? all.find((s) => s.name === ref);
    if (exact) return exact;
    const byPrefix = ref ? all.filter((s) => s.id.startsWith(ref)) : [];
    if (byPrefix.length > 1) {
      throw new InvalidParameterError(`service ${ref} is ambiguous (${byPrefix.length} matches found)`);
    }
    const found = byPrefix[0];
    if (!found) throw new NotFoundError(`service ${ref} not found`);
    return found;
  }

  tasks(): TaskRecord[] {
    return [...this.requireCluster().tasks.values()];
  }

  findTask(ref: string): TaskRecord {
    const tasks = this.tasks();
    const exact = tasks.find((t) => t.id === ref);
    if (exact) return exact;
    const byPrefix = ref ? tasks.filter((t) => t.id.startsWith(ref)) : [];
    if (byPrefix.length === 1 && byPrefix[0]) return byPrefix[0];
    if (byPrefix.length > 1) {
      throw new InvalidParameterError(`task ${ref} is ambiguous (${byPrefix.length} matches found)`);
    }
    throw new NotFoundError(`task ${ref} not found`);
  }

  status(taskId: string): TaskStatus | undefined {
    return this.ctx.cluster?.taskStatuses.get(taskId);
  }

  /** Running tasks of a service, as its hosts report them. */
  running(serviceId: string): number {
    const cluster = this.requireCluster();
    let n = 0;
    for (const t of cluster.tasks.values()) {
      if (t.serviceId === serviceId && t.desired === "running")
        if (cluster.taskStatuses.get(t.id)?.state === "running") n++;
    }
    return n;
  }

  async create(spec: ServiceSpec): Promise<{ service: ServiceRecord; warnings: string[] }> {
    const cluster = this.requireCluster();
    const name = spec.name || randomName((n) => [...cluster.services.values()].some((s) => s.name === n));
    checkSpec({ ...spec, name });
    if (this.list().some((s) => s.name === name)) throw nameTaken(name);
    const nets = this.resolveNetworks(spec.networks);
    const ports = this.assignPorts(spec.ports);
    this.checkPortsFree(ports);
    const meshed = ports.some((p) => p.mode === "ingress");
    const ingress = meshed ? await this.ensureIngress() : undefined;
    const id = newObjectId();
    const now = new Date().toISOString();
    const vipNets = spec.endpointMode === "vip" ? [...nets, ...(ingress ? [ingress] : [])] : [];
    const vips = await this.allocateVips(cluster, id, vipNets);
    const service: ServiceRecord = {
      id,
      name,
      created: now,
      updated: now,
      version: 1,
      image: spec.image,
      ...(spec.entrypoint ? { entrypoint: spec.entrypoint } : {}),
      cmd: spec.cmd,
      env: spec.env,
      labels: spec.labels,
      replicas: spec.replicas,
      networks: nets.map((n) => n.id),
      endpointMode: spec.endpointMode,
      ports,
      vips,
    };
    const meshKeys = ports
      .filter((p) => p.mode === "ingress")
      .map((p) => servicePortKey(p.protocol, p.published));
    try {
      await this.mesh.reserveIngressPorts(service);
    } catch (err) {
      await this.releaseVips(cluster, vips);
      throw err;
    }
    const undo = async () => {
      await this.mesh.releaseIngressPorts(id);
      await this.releaseVips(cluster, vips);
    };
    const etcd = cluster.etcd;
    let txn = etcd.if(serviceNameKey(name), "Create", "==", 0);
    for (const k of meshKeys) txn = txn.and(k, "Create", "==", 0);
    const done = await txn
      .then(
        etcd.put(serviceNameKey(name)).value(id),
        ...meshKeys.map((k) => etcd.put(k).value(id)),
        etcd.put(serviceKey(id)).value(JSON.stringify(service)),
      )
      .commit()
      .catch(async (err) => {
        await undo();
        throw err;
      });
    if (!done.succeeded) {
      await undo();
      throw (await etcd.get(serviceNameKey(name)).exists())
        ? nameTaken(name)
        : new ConflictError("a port of this service was just published by another service; try again");
    }
    cluster.services.set(id, service);
    log.info({ service: name, id, replicas: spec.replicas }, "service created");
    return { service, warnings: this.imageWarnings(spec.image) };
  }

  /**
   * Docker's update, for what ctnet can change in place: the replica count and the labels. The
   * version is the one the client read; a service changed since then is refused, as in Docker.
   */
  async update(ref: string, version: number, spec: ServiceSpec): Promise<ServiceRecord> {
    const cluster = this.requireCluster();
    const current = this.find(ref);
    const res = await cluster.etcd.get(serviceKey(current.id)).exec();
    const kv = res.kvs[0];
    if (!kv) throw new NotFoundError(`service ${ref} not found`);
    const stored = JSON.parse(kv.value.toString()) as ServiceRecord;
    if (stored.version !== version) {
      throw new ConflictError(
        `update out of sequence: the service is at version ${stored.version}, the update is based on ${version}`,
      );
    }
    checkSpec({ ...spec, name: spec.name || stored.name });
    const changed = this.changedFields(stored, spec);
    if (changed.length > 0) {
      throw new NotSupportedError(
        `ctnet updates a service's replicas and labels only, not its ${changed.join(", ")}: remove the service and create it again`,
      );
    }
    const next: ServiceRecord = {
      ...stored,
      replicas: spec.replicas,
      labels: spec.labels,
      version: stored.version + 1,
      updated: new Date().toISOString(),
    };
    const txn = await cluster.etcd
      .if(serviceKey(stored.id), "Mod", "==", kv.mod_revision)
      .then(cluster.etcd.put(serviceKey(stored.id)).value(JSON.stringify(next)))
      .commit();
    if (!txn.succeeded) throw new ConflictError("update out of sequence: the service changed meanwhile");
    cluster.services.set(next.id, next);
    log.info({ service: next.name, replicas: next.replicas }, "service updated");
    return next;
  }

  /** Removes the service and frees its name, mesh ports and VIPs; its tasks stop in the background. */
  async remove(ref: string): Promise<void> {
    const cluster = this.requireCluster();
    const current = this.find(ref);
    const res = await cluster.etcd.get(serviceKey(current.id)).exec();
    const kv = res.kvs[0];
    if (!kv) throw new NotFoundError(`service ${ref} not found`);
    const s = JSON.parse(kv.value.toString()) as ServiceRecord;
    const etcd = cluster.etcd;
    const txn = await etcd
      .if(serviceKey(s.id), "Mod", "==", kv.mod_revision)
      .and(serviceNameKey(s.name), "Value", "==", s.id)
      .then(
        etcd.delete().key(serviceKey(s.id)),
        etcd.delete().key(serviceNameKey(s.name)),
        ...s.ports
          .filter((p) => p.mode === "ingress")
          .map((p) => etcd.delete().key(servicePortKey(p.protocol, p.published))),
        ...Object.entries(s.vips).map(([net, vip]) => etcd.delete().key(addressKey(net, vip))),
      )
      .commit();
    if (!txn.succeeded) throw new ConflictError(`service ${s.name} changed meanwhile; try again`);
    cluster.services.delete(s.id);
    await this.mesh.releaseIngressPorts(s.id);
    for (const [net, vip] of Object.entries(s.vips)) cluster.addresses.delete(`${net}/${vip}`);
    log.info({ service: s.name }, "service removed");
  }

  /** The fields of `spec` that differ from the service as stored, but for replicas and labels. */
  private changedFields(s: ServiceRecord, spec: ServiceSpec): string[] {
    const nets = this.resolveNetworks(spec.networks).map((n) => n.id);
    const ports = (list: ServicePort[]) =>
      list.map((p) => `${p.mode} ${p.protocol} ${p.published} ${p.target}`).join(",");
    const sameList = (a: string[] | undefined, b: string[] | undefined) =>
      JSON.stringify(a ?? []) === JSON.stringify(b ?? []);
    const checks: [string, boolean][] = [
      ["name", spec.name === "" || spec.name === s.name],
      ["image", spec.image === s.image],
      ["entrypoint", sameList(spec.entrypoint, s.entrypoint)],
      ["command", sameList(spec.cmd, s.cmd)],
      ["environment", sameList(spec.env, s.env)],
      ["networks", sameList(nets, s.networks)],
      ["endpoint mode", spec.endpointMode === s.endpointMode],
      ["published ports", ports(this.assignPorts(spec.ports, s.ports)) === ports(s.ports)],
    ];
    return checks.filter(([, same]) => !same).map(([what]) => what);
  }

  private resolveNetworks(refs: string[]): NetworkRecord[] {
    const out: NetworkRecord[] = [];
    for (const ref of refs) {
      const net = this.networks.find(ref);
      if (net.scope !== "global") {
        throw new ForbiddenError(
          `network ${net.name} is local to this host: a service's networks must span the cluster (create one with -d overlay)`,
        );
      }
      if (isIngress(net)) {
        throw new ForbiddenError(
          `service cannot be explicitly attached to the ingress network "${net.name}": publish a port instead`,
        );
      }
      if (!out.some((n) => n.id === net.id)) out.push(net);
    }
    return out;
  }

  /**
   * Ingress ports published as 0 get a free one of 30000–32767, as in Docker; an update keeps the
   * port already given (`given`) to the same target.
   */
  private assignPorts(ports: ServicePort[], given: ServicePort[] = []): ServicePort[] {
    const cluster = this.requireCluster();
    const taken = new Set<string>();
    for (const s of cluster.services.values())
      for (const p of s.ports) taken.add(`${p.protocol}/${p.published}`);
    for (const p of ports) taken.add(`${p.protocol}/${p.published}`);
    return ports.map((p) => {
      if (p.published !== 0) return p;
      const kept = given.find((g) => g.mode === p.mode && g.protocol === p.protocol && g.target === p.target);
      if (kept) return kept;
      if (p.mode === "host") {
        throw new InvalidParameterError(`a host-mode port needs a published port (target ${p.target})`);
      }
      for (let port = AUTO_PORTS.first; port <= AUTO_PORTS.last; port++) {
        if (taken.has(`${p.protocol}/${port}`)) continue;
        taken.add(`${p.protocol}/${port}`);
        return { ...p, published: port };
      }
      throw new ConflictError(
        `no free port left in ${AUTO_PORTS.first}-${AUTO_PORTS.last} for the routing mesh`,
      );
    });
  }

  /**
   * A routing-mesh port is one service's on every host; a host-mode port may be shared between
   * services (the scheduler keeps their tasks apart), but not with a mesh port.
   */
  private checkPortsFree(ports: ServicePort[]): void {
    for (const s of this.requireCluster().services.values()) {
      for (const p of ports) {
        const other = s.ports.find((o) => o.protocol === p.protocol && o.published === p.published);
        if (!other || (other.mode === "host" && p.mode === "host")) continue;
        throw new ConflictError(
          `port '${p.published}' is already in use by service '${s.name}' (${s.id}) as ${other.mode === "ingress" ? "an ingress" : "a host-mode"} port`,
        );
      }
    }
  }

  /** The `ingress` network, made on first use; another host may be making it at the same moment. */
  private async ensureIngress(): Promise<NetworkRecord> {
    const find = () => [...this.ctx.networks.values()].find(isIngress);
    const have = find();
    if (have) return have;
    try {
      return await this.networks.create({
        name: INGRESS_NETWORK,
        driver: "overlay",
        internal: false,
        attachable: false,
        enableIPv4: true,
        enableIPv6: false,
        options: {},
        labels: { [SWARM_INTERNAL_LABEL]: "true" },
        ipamDriver: "default",
        ipamOptions: {},
        ipamConfig: [{ subnet: INGRESS_SUBNET }],
      });
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
      for (let i = 0; i < 50; i++) {
        const made = find();
        if (made) return made;
        await sleep(100);
      }
      throw new ConflictError(
        `a network named ${INGRESS_NETWORK} exists but is not the cluster's: remove it, the routing mesh needs that name`,
      );
    }
  }

  /**
   * One VIP per network, claimed in the store without lease: it belongs to the service, not a host.
   * Outside the engine's queue, so that a create does not wait behind the containers it starts: an
   * address is taken from the IPAM synchronously, and one another host claimed first stays marked
   * used, as ClusterSync would mark it.
   */
  private async allocateVips(
    cluster: Cluster,
    serviceId: string,
    nets: NetworkRecord[],
  ): Promise<Record<string, string>> {
    const vips: Record<string, string> = {};
    try {
      for (const net of nets) vips[net.id] = await this.claimVip(cluster, serviceId, net);
    } catch (err) {
      await this.releaseVips(cluster, vips);
      throw err;
    }
    return vips;
  }

  private async claimVip(cluster: Cluster, serviceId: string, net: NetworkRecord): Promise<string> {
    const pool = net.pools.find((p) => p.family === 4);
    if (!pool) {
      throw new NotSupportedError(
        `network ${net.name} has no IPv4 subnet: a service's virtual IP is IPv4 (use --endpoint-mode dnsrr)`,
      );
    }
    for (let i = 0; i < VIP_ATTEMPTS; i++) {
      const vip = this.ctx.globalIpam.requestAddress(net.id, pool.subnet);
      // An address another host claimed first stays marked used here, as for endpoints.
      if (await cluster.claimAddress(net.id, vip, `vip:${serviceId}`, { permanent: true })) return vip;
    }
    throw NoAvailableAddressError.forNetwork(4, net.name, net.id);
  }

  private async releaseVips(cluster: Cluster, vips: Record<string, string>): Promise<void> {
    for (const [net, vip] of Object.entries(vips)) {
      await cluster
        .releaseAddress(net, vip)
        .catch((err) => log.error({ err, network: net, vip }, "cannot release a service's virtual IP"));
    }
  }

  private imageWarnings(image: string): string[] {
    if (!image || this.images.find(image)) return [];
    return [`image ${image} is not on this host: tasks fail on every host that does not have it`];
  }
}

function nameTaken(name: string): ConflictError {
  return new ConflictError(`service ${name} already exists`);
}

function checkSpec(spec: ServiceSpec): void {
  if (spec.name.length > 63 || !SERVICE_NAME.test(spec.name)) {
    throw new InvalidParameterError(
      `invalid service name "${spec.name}": it must be a valid DNS name component ([a-zA-Z0-9], dashes and underscores inside, at most 63 characters)`,
    );
  }
  if (!spec.image && spec.cmd.length === 0 && (spec.entrypoint ?? []).length === 0) {
    throw new InvalidParameterError(
      "no command specified: a service without an image runs a command on each host's filesystem",
    );
  }
  if (!Number.isSafeInteger(spec.replicas) || spec.replicas < 0) {
    throw new InvalidParameterError(`invalid replica count ${spec.replicas}`);
  }
  const seen = new Set<string>();
  for (const p of spec.ports) {
    if (!Number.isInteger(p.target) || p.target < 1 || p.target > 65535)
      throw new InvalidParameterError(`invalid target port ${p.target}`);
    if (!Number.isInteger(p.published) || p.published < 0 || p.published > 65535)
      throw new InvalidParameterError(`invalid published port ${p.published}`);
    if (p.mode === "ingress" && spec.endpointMode === "dnsrr") {
      throw new InvalidParameterError("port published with ingress mode can't be used with dnsrr mode");
    }
    const key = `${p.protocol}/${p.published}`;
    if (p.published !== 0 && seen.has(key))
      throw new InvalidParameterError(`port ${p.published}/${p.protocol} is published twice`);
    seen.add(key);
  }
}
