import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Etcd3, type IKeyValue, type Lease, type Watcher } from "etcd3";
import type { NetworkRecord } from "../engine/types.js";
import { ConflictError, SystemError } from "../errors.js";
import { log } from "../log.js";
import type { ClusterConfig } from "./config.js";
import {
  ADDRESSES,
  addressKey,
  ENDPOINTS,
  endpointKey,
  HOSTS,
  hostKey,
  LEADER,
  MEMBERS,
  memberKey,
  NETWORKS,
  networkKey,
  PREFIX,
  REGISTRY,
  SERVICES,
  splitAddressKey,
  TASK_STATUS,
  TASKS,
} from "./keys.js";
import {
  type AddressClaim,
  type ClusterEndpoint,
  type ClusterHost,
  type ClusterMember,
  type Registry,
  type ServiceRecord,
  type TaskRecord,
  type TaskStatus,
  VXLAN_ID_OPTION,
} from "./types.js";

/**
 * Seconds a host's keys outlive its last keep-alive. A dead host's endpoints disappear from the
 * others within this time; etcd keeps the lease alive every TTL/3.
 */
export const LEASE_TTL = 4;
const CAS_ATTEMPTS = 10;
/**
 * A request etcd does not answer in this time fails: the engine's queue must never wait forever
 * on a store that went away. Streams (the watch, lease keep-alives) are long-lived and exempt.
 */
const CALL_TIMEOUT_MS = 5000;

export function etcdClient(hosts: string | string[]): Etcd3 {
  return new Etcd3({
    hosts,
    dialTimeout: 2000,
    defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
  });
}

export type WatchKind = "put" | "delete";

/** What the engine hears of changes in the store (its own writes included). */
export interface ClusterListener {
  network(kind: WatchKind, id: string, net: NetworkRecord | undefined): void;
  endpoint(kind: WatchKind, e: ClusterEndpoint): void;
  address(kind: WatchKind, networkId: string, address: string, claim: AddressClaim | undefined): void;
  /** The host's lease was lost (etcd unreachable longer than the TTL) and a new one granted. */
  leaseRenewed(): void;
  /** Services, tasks, task statuses or the leader changed (the mirror holds the new state). */
  services?(change: ServiceChange): void;
}

export type ServiceChange =
  | { what: "service"; kind: WatchKind; id: string; service: ServiceRecord | undefined }
  | { what: "task"; kind: WatchKind; id: string; task: TaskRecord | undefined }
  | { what: "status"; kind: WatchKind; id: string; status: TaskStatus | undefined }
  | { what: "leader"; kind: WatchKind; leader: string };

const parse = <T>(kv: IKeyValue): T => JSON.parse(kv.value.toString()) as T;

/**
 * This host's seat in the cluster: the etcd client, the host's lease, and a mirror of the store
 * kept current by one watch. Reads come from the mirror; writes go to etcd, with compare-and-swap
 * where two hosts could race (network names, VNIs and subnets in one registry record, addresses
 * one key each), so nothing is ever given out twice.
 */
export class Cluster {
  readonly hosts = new Map<string, ClusterHost>();
  readonly members = new Map<string, ClusterMember>();
  readonly networks = new Map<string, NetworkRecord>();
  /** every host's endpoints of global networks, by endpoint id */
  readonly endpoints = new Map<string, ClusterEndpoint>();
  /** "<network>/<address>" → claim */
  readonly addresses = new Map<string, AddressClaim>();
  readonly services = new Map<string, ServiceRecord>();
  readonly tasks = new Map<string, TaskRecord>();
  readonly taskStatuses = new Map<string, TaskStatus>();
  /** the host that runs the scheduler now, "" if none */
  leader = "";
  private lease: Lease;
  private watcher: Watcher | undefined;
  private listener: ClusterListener | undefined;
  private closed = false;

  private constructor(
    private readonly client: Etcd3,
    readonly config: ClusterConfig,
    private readonly leaseFile: string,
  ) {
    this.lease = this.newLease();
  }

  get nodeName(): string {
    return this.config.nodeName;
  }

  get advertiseAddr(): string {
    return this.config.advertiseAddr;
  }

  /**
   * Connects (waiting up to timeoutMs for etcd), grants the host's lease, loads the mirror and
   * registers the host. The listener is attached later (listen), after the engine has read the
   * mirror, so that no event is handled before the engine's initial view is built.
   */
  static async connect(cfg: ClusterConfig, execRoot: string, timeoutMs: number): Promise<Cluster> {
    await waitForEtcd(cfg.endpoints, timeoutMs, "cannot reach the cluster store at");
    const c = new Cluster(etcdClient(cfg.endpoints), cfg, join(execRoot, "cluster-lease"));
    try {
      await c.load();
      const namesake = c.hosts.get(cfg.nodeName);
      if (namesake && namesake.addr !== cfg.advertiseAddr) {
        throw new ConflictError(
          `a host named ${cfg.nodeName} (${namesake.addr}) is already in the cluster; give this host another name (--node-name)`,
        );
      }
      await c.lease.grant();
      await c.register();
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  private newLease(): Lease {
    const lease = this.client.lease(LEASE_TTL);
    lease.on("lost", (err) => {
      if (this.closed) return;
      log.warn({ err: err.message }, "cluster lease lost: registering again");
      this.lease = this.newLease();
      void this.register()
        .then(() => this.listener?.leaseRenewed())
        .catch((e) => log.error({ err: e }, "cannot register with the cluster again"));
    });
    return lease;
  }

  private async leaseId(): Promise<string> {
    return this.lease.grant();
  }

  private async register(): Promise<void> {
    const now = new Date().toISOString();
    const host: ClusterHost = { name: this.nodeName, addr: this.advertiseAddr, started: now };
    await this.lease.put(hostKey(this.nodeName)).value(JSON.stringify(host));
    const member: ClusterMember = {
      name: this.nodeName,
      addr: this.advertiseAddr,
      role: this.config.member ? "member" : "client",
      joined: this.members.get(this.nodeName)?.joined ?? now,
    };
    await this.client.put(memberKey(this.nodeName)).value(JSON.stringify(member));
    this.members.set(member.name, member);
  }

  /**
   * The lease a previous run of this daemon held, if any: its keys are taken over by the new
   * lease as the engine publishes its endpoints again, and whatever is left on it is stale.
   */
  async dropPreviousLease(): Promise<void> {
    let previous: string | undefined;
    try {
      previous = readFileSync(this.leaseFile, "utf8").trim();
    } catch {
      previous = undefined;
    }
    const current = await this.leaseId();
    if (previous && previous !== current) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: previous });
      } catch (err) {
        log.debug({ err: (err as Error).message }, "previous cluster lease already gone");
      }
    }
    writeFileSync(this.leaseFile, `${current}\n`);
  }

  private async load(): Promise<void> {
    const res = await this.client.getAll().prefix(PREFIX).exec();
    for (const kv of res.kvs) this.apply("put", kv);
    this.startRevision = String(Number(res.header.revision) + 1);
  }

  private startRevision = "0";
  /** Changes applied to the mirror so far, for views derived from it (the resolver's name index). */
  changes = 0;

  /** Starts delivering changes, from right after the loaded snapshot. */
  async listen(listener: ClusterListener): Promise<void> {
    this.listener = listener;
    const watcher = await this.client.watch().prefix(PREFIX).startRevision(this.startRevision).create();
    watcher.on("put", (kv) => this.dispatch("put", kv));
    watcher.on("delete", (kv) => this.dispatch("delete", kv));
    watcher.on("error", (err) => log.error({ err: err.message }, "cluster watch failed"));
    this.watcher = watcher;
  }

  private dispatch(kind: WatchKind, kv: IKeyValue): void {
    this.changes++;
    try {
      const event = this.apply(kind, kv);
      if (event) event(this.listener);
    } catch (err) {
      log.error({ err, key: kv.key.toString() }, "cannot apply a cluster change");
    }
  }

  /** Updates the mirror; returns how to tell the listener, if it cares. */
  private apply(kind: WatchKind, kv: IKeyValue): ((l: ClusterListener | undefined) => void) | undefined {
    const key = kv.key.toString();
    const put = kind === "put";
    if (key.startsWith(HOSTS)) {
      const name = key.slice(HOSTS.length);
      if (put) this.hosts.set(name, parse<ClusterHost>(kv));
      else this.hosts.delete(name);
      return undefined;
    }
    if (key.startsWith(MEMBERS)) {
      const name = key.slice(MEMBERS.length);
      if (put) this.members.set(name, parse<ClusterMember>(kv));
      else this.members.delete(name);
      return undefined;
    }
    if (key.startsWith(NETWORKS)) {
      const id = key.slice(NETWORKS.length);
      const net = put ? parse<NetworkRecord>(kv) : undefined;
      if (net) this.networks.set(id, net);
      else this.networks.delete(id);
      return (l) => l?.network(kind, id, net);
    }
    if (key.startsWith(ENDPOINTS)) {
      const id = key.slice(key.lastIndexOf("/") + 1);
      const e = put ? parse<ClusterEndpoint>(kv) : this.endpoints.get(id);
      if (put && e) this.endpoints.set(id, e);
      else this.endpoints.delete(id);
      return e ? (l) => l?.endpoint(kind, e) : undefined;
    }
    if (key.startsWith(SERVICES)) {
      const id = key.slice(SERVICES.length);
      const service = put ? parse<ServiceRecord>(kv) : undefined;
      if (service) this.services.set(id, service);
      else this.services.delete(id);
      return (l) => l?.services?.({ what: "service", kind, id, service });
    }
    if (key.startsWith(TASKS)) {
      const id = key.slice(TASKS.length);
      const task = put ? parse<TaskRecord>(kv) : undefined;
      if (task) this.tasks.set(id, task);
      else this.tasks.delete(id);
      return (l) => l?.services?.({ what: "task", kind, id, task });
    }
    if (key.startsWith(TASK_STATUS)) {
      const id = key.slice(TASK_STATUS.length);
      const status = put ? parse<TaskStatus>(kv) : undefined;
      if (status) this.taskStatuses.set(id, status);
      else this.taskStatuses.delete(id);
      return (l) => l?.services?.({ what: "status", kind, id, status });
    }
    if (key === LEADER) {
      this.leader = put ? kv.value.toString() : "";
      return (l) => l?.services?.({ what: "leader", kind, leader: this.leader });
    }
    if (key.startsWith(ADDRESSES)) {
      const parts = splitAddressKey(key);
      if (!parts) return undefined;
      const claim = put ? parse<AddressClaim>(kv) : undefined;
      if (claim) this.addresses.set(`${parts[0]}/${parts[1]}`, claim);
      else this.addresses.delete(`${parts[0]}/${parts[1]}`);
      return (l) => l?.address(kind, parts[0], parts[1], claim);
    }
    return undefined;
  }

  /**
   * Creates a global network: `build` picks its VNI and subnets against the registry as read, and
   * the write succeeds only if nobody changed the registry meanwhile (else it is read and built
   * again). Errors `build` throws (a taken name, an overlap) come back as they are.
   */
  async createNetwork(build: (registry: Registry) => NetworkRecord): Promise<NetworkRecord> {
    for (let i = 0; i < CAS_ATTEMPTS; i++) {
      const res = await this.client.get(REGISTRY).exec();
      const kv = res.kvs[0];
      const registry: Registry = kv ? parse<Registry>(kv) : { networks: {} };
      const net = build(registry);
      const vni = Number(net.options[VXLAN_ID_OPTION]);
      const next: Registry = {
        networks: {
          ...registry.networks,
          [net.id]: { name: net.name, vni, pools: net.pools },
        },
      };
      const txn = await this.client
        .if(REGISTRY, "Mod", "==", kv ? kv.mod_revision : 0)
        .then(
          this.client.put(REGISTRY).value(JSON.stringify(next)),
          this.client.put(networkKey(net.id)).value(JSON.stringify(net)),
        )
        .commit();
      if (txn.succeeded) {
        this.networks.set(net.id, net);
        return net;
      }
    }
    throw new ConflictError("the cluster's network registry is too busy; try again");
  }

  async deleteNetwork(id: string): Promise<void> {
    for (let i = 0; i < CAS_ATTEMPTS; i++) {
      const res = await this.client.get(REGISTRY).exec();
      const kv = res.kvs[0];
      const registry: Registry = kv ? parse<Registry>(kv) : { networks: {} };
      const { [id]: _gone, ...rest } = registry.networks;
      const txn = await this.client
        .if(REGISTRY, "Mod", "==", kv ? kv.mod_revision : 0)
        .then(
          this.client.put(REGISTRY).value(JSON.stringify({ networks: rest })),
          this.client.delete().key(networkKey(id)),
          this.client.delete().prefix(`${ADDRESSES}${id}/`),
        )
        .commit();
      if (txn.succeeded) {
        this.networks.delete(id);
        return;
      }
    }
    throw new ConflictError("the cluster's network registry is too busy; try again");
  }

  /**
   * Claims an address for an endpoint of this host; false if another endpoint holds it. A claim
   * this endpoint already holds (a restarted daemon) moves to the current lease.
   */
  async claimAddress(
    networkId: string,
    address: string,
    endpoint: string,
    o: { permanent?: boolean } = {},
  ): Promise<boolean> {
    const key = addressKey(networkId, address);
    const claim: AddressClaim = { endpoint, host: this.nodeName };
    const value = JSON.stringify(claim);
    // A service's virtual IP outlives the host that claimed it; an endpoint's address does not.
    const lease = o.permanent ? undefined : await this.leaseId();
    const put = () => {
      const p = this.client.put(key).value(value);
      return lease ? p.lease(lease) : p;
    };
    const txn = await this.client.if(key, "Create", "==", 0).then(put()).else(this.client.get(key)).commit();
    if (txn.succeeded) {
      this.addresses.set(`${networkId}/${address}`, claim);
      return true;
    }
    const held = txn.responses[0]?.response_range?.kvs[0];
    if (held && parse<AddressClaim>(held).endpoint === endpoint) {
      await put();
      return true;
    }
    return false;
  }

  async releaseAddress(networkId: string, address: string): Promise<void> {
    await this.client.delete().key(addressKey(networkId, address));
    this.addresses.delete(`${networkId}/${address}`);
  }

  async publishEndpoint(e: ClusterEndpoint): Promise<void> {
    await this.client
      .put(endpointKey(e.networkId, e.id))
      .value(JSON.stringify(e))
      .lease(await this.leaseId());
    this.endpoints.set(e.id, e);
    this.changes++;
  }

  async withdrawEndpoint(e: { networkId: string; id: string }): Promise<void> {
    await this.client.delete().key(endpointKey(e.networkId, e.id));
    this.endpoints.delete(e.id);
    this.changes++;
  }

  /** The global networks as the store has them now, which can be ahead of the watch. */
  async readNetworks(): Promise<NetworkRecord[]> {
    const res = await this.client.getAll().prefix(NETWORKS).exec();
    return res.kvs.map((kv) => parse<NetworkRecord>(kv));
  }

  endpointsOn(networkId: string): ClusterEndpoint[] {
    return [...this.endpoints.values()].filter((e) => e.networkId === networkId);
  }

  /** The etcd client, for the services layer's own reads and transactions on its keys. */
  get etcd(): Etcd3 {
    return this.client;
  }

  /** The id of this host's current lease, for keys that must vanish with the host. */
  currentLease(): Promise<string> {
    return this.leaseId();
  }

  /** Removes this host's etcd member, unless it is the last one (then the cluster ends with it). */
  async removeMember(name: string): Promise<void> {
    const { members } = await this.client.cluster.memberList({});
    const me = members.find((m) => m.name === name);
    if (me && members.length > 1) await this.client.cluster.memberRemove({ ID: me.ID });
  }

  /** Leaves the cluster: the host's records go, and with its lease every endpoint and address it held. */
  async withdraw(): Promise<void> {
    this.closed = true;
    await this.client.delete().key(memberKey(this.nodeName));
    await this.client.delete().key(hostKey(this.nodeName));
    await this.lease.revoke();
    rmSync(this.leaseFile, { force: true });
  }

  /** Stops watching and keeping the lease alive; the host's keys expire with the lease. */
  async close(): Promise<void> {
    this.closed = true;
    await this.watcher?.cancel().catch(() => {});
    this.lease.release();
    this.client.close();
  }
}

/**
 * Announces a new etcd member to the cluster at `endpoint` before it starts; returns etcd's
 * --initial-cluster for it (every member's name=peer URL, the new one included).
 */
export async function addEtcdMember(endpoint: string, name: string, peerUrl: string): Promise<string> {
  const deadline = Date.now() + MEMBER_ADD_TIMEOUT_MS;
  for (;;) {
    // A client per attempt: the etcd3 client's circuit breaker would refuse calls after a few failures.
    const client = etcdClient(endpoint);
    try {
      const res = await client.cluster.memberAdd({ peerURLs: [peerUrl] });
      return res.members
        .map((m) => `${m.ID === res.member.ID ? name : m.name}=${m.peerURLs.join(",")}`)
        .join(",");
    } catch (err) {
      // etcd adds a member only once the leader has been in touch with every other one for 5 s
      // (its strict reconfiguration check): a member that just joined makes it wait.
      const message = (err as Error).message;
      if (!/unhealthy cluster/.test(message) || Date.now() > deadline) {
        throw new SystemError(`cannot add an etcd member through ${endpoint}: ${message}`);
      }
    } finally {
      client.close();
    }
    await sleep(500);
  }
}

const MEMBER_ADD_TIMEOUT_MS = 20_000;

/**
 * Waits until etcd at `hosts` serves a linearizable read: a store that is starting, or a new
 * member that has joined and caught up (etcd refuses to add another member before).
 */
export async function waitForEtcd(
  hosts: string | string[],
  timeoutMs: number,
  failure = "no etcd member answered at",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A client per attempt: the etcd3 client's circuit breaker would refuse calls after a few failures.
    const client = etcdClient(hosts);
    try {
      await client.get(REGISTRY).exec();
      return;
    } catch (err) {
      if (Date.now() > deadline) {
        throw new SystemError(`${failure} ${[hosts].flat().join(", ")}: ${(err as Error).message}`);
      }
    } finally {
      client.close();
    }
    await sleep(200);
  }
}
