import { isIPv4 } from "node:net";
import { addEtcdMember, Cluster, waitForEtcd } from "../cluster/cluster.js";
import {
  type ClusterConfig,
  type EtcdMemberSpec,
  loadClusterConfig,
  removeClusterConfig,
  saveClusterConfig,
} from "../cluster/config.js";
import { EtcdMember } from "../cluster/etcd-member.js";
import { ConflictError, ForbiddenError, InvalidParameterError, SystemError } from "../errors.js";
import { log } from "../log.js";
import { ClusterSync } from "./cluster-sync.js";
import type { EngineContext } from "./context.js";
import { requireCluster } from "./global-networks.js";
import { INGRESS_SANDBOX } from "./ingress-sandbox.js";
import type { Networks } from "./networks.js";

const CLIENT_PORT = 2379;
const PEER_PORT = 2380;
/** How long start-up, init and join wait for etcd to answer. */
const CONNECT_TIMEOUT_MS = 20_000;

export interface ClusterInfo {
  NodeName: string;
  Role: "member" | "client" | "none";
  Addr: string;
  Hosts: { Name: string; Addr: string; Role: string; State: "ready" | "down"; Self: boolean }[];
}

export interface ClusterStartOptions {
  nodeName: string;
  /** `etcd://HOST:PORT` given to the daemon: use that etcd, run none */
  clusterStore?: string;
  advertiseAddr?: string;
}

/**
 * Joining, leaving and following a cluster. The configuration is saved in the data root, so a
 * restarted daemon takes its seat again by itself (restarting its etcd member if it runs one).
 */
export class ClusterOps {
  private readonly etcd: EtcdMember;
  private readonly sync: ClusterSync;

  constructor(
    private readonly ctx: EngineContext,
    networks: Networks,
    private readonly o: ClusterStartOptions,
  ) {
    this.etcd = new EtcdMember(ctx.paths.dataRoot, ctx.paths.execRoot);
    this.sync = new ClusterSync(ctx, networks);
  }

  /** Start-up, before reconcile: connects if this host is in a cluster and loads the global view. */
  async connectAtStart(): Promise<void> {
    let cfg = loadClusterConfig(this.ctx.paths.dataRoot);
    if (!cfg && this.o.clusterStore) {
      cfg = {
        nodeName: this.o.nodeName,
        advertiseAddr: this.o.advertiseAddr ?? (await this.detectAdvertiseAddr()),
        endpoints: [storeUrl(this.o.clusterStore)],
      };
    }
    if (!cfg) return;
    if (cfg.member) this.etcd.start(cfg.member);
    const cluster = await Cluster.connect(cfg, this.ctx.paths.execRoot, CONNECT_TIMEOUT_MS);
    this.ctx.cluster = cluster;
    this.sync.loadView(cluster);
    log.info({ node: cfg.nodeName, store: cfg.endpoints }, "cluster joined");
  }

  /** Start-up, after reconcile: this host's endpoints are published again under the new lease. */
  async followAtStart(): Promise<void> {
    const cluster = this.ctx.cluster;
    if (!cluster) return;
    await this.sync.publishLocal(cluster);
    await cluster.dropPreviousLease();
    await cluster.listen(this.sync);
    this.announce("joined");
  }

  private announce(what: "joined" | "left"): void {
    for (const hook of this.ctx.serviceHooks) hook({ what });
  }

  init(advertiseAddr: string | undefined): Promise<{ NodeName: string; Addr: string }> {
    return this.ctx.lock.run(async () => {
      this.refuseIfJoined();
      const addr = await this.checkAdvertiseAddr(advertiseAddr);
      const member = this.memberSpec(addr, `${this.o.nodeName}=${peerUrl(addr)}`, "new");
      await this.etcd.stop();
      this.etcd.removeData();
      this.etcd.start(member);
      await this.seat({
        nodeName: this.o.nodeName,
        advertiseAddr: addr,
        endpoints: [member.clientUrl],
        member,
      });
      return { NodeName: this.o.nodeName, Addr: `${addr}:${CLIENT_PORT}` };
    });
  }

  join(target: string, advertiseAddr: string | undefined, asMember: boolean): Promise<void> {
    return this.ctx.lock.run(async () => {
      this.refuseIfJoined();
      const endpoint = storeUrl(target);
      const addr = await this.checkAdvertiseAddr(advertiseAddr);
      const cfg: ClusterConfig = { nodeName: this.o.nodeName, advertiseAddr: addr, endpoints: [endpoint] };
      if (asMember) {
        const initial = await addEtcdMember(endpoint, this.o.nodeName, peerUrl(addr));
        cfg.member = this.memberSpec(addr, initial, "existing");
        cfg.endpoints = [cfg.member.clientUrl, endpoint];
        await this.etcd.stop();
        this.etcd.removeData();
        this.etcd.start(cfg.member);
        try {
          await waitForEtcd(cfg.member.clientUrl, CONNECT_TIMEOUT_MS);
        } catch (err) {
          await this.etcd.stop();
          this.etcd.removeData();
          throw err;
        }
      }
      await this.seat(cfg);
    });
  }

  /** Connects, saves the configuration and starts following; a member that cannot serve is undone. */
  private async seat(cfg: ClusterConfig): Promise<void> {
    let cluster: Cluster;
    try {
      cluster = await Cluster.connect(cfg, this.ctx.paths.execRoot, CONNECT_TIMEOUT_MS);
    } catch (err) {
      if (cfg.member) {
        const tail = this.etcd.logTail();
        await this.etcd.stop();
        this.etcd.removeData();
        if (!(err instanceof ConflictError)) {
          throw new SystemError(`${(err as Error).message}${tail ? `\netcd said:\n${tail}` : ""}`);
        }
      }
      throw err;
    }
    saveClusterConfig(this.ctx.paths.dataRoot, cfg);
    this.ctx.cluster = cluster;
    this.sync.loadView(cluster);
    await this.sync.publishLocal(cluster);
    await cluster.dropPreviousLease();
    await cluster.listen(this.sync);
    log.info({ node: cfg.nodeName, store: cfg.endpoints, member: Boolean(cfg.member) }, "cluster joined");
    this.announce("joined");
  }

  leave(): Promise<void> {
    return this.ctx.lock.run(async () => {
      const cluster = requireCluster(this.ctx.cluster, "cluster");
      // The ingress sandbox is no container: the routing mesh takes it down once the host has left.
      const busy = [...this.ctx.endpoints.values()].filter(
        (e) => this.ctx.networks.get(e.networkId)?.scope === "global" && e.containerId !== INGRESS_SANDBOX,
      );
      if (busy.length > 0) {
        const names = busy.map((e) => this.ctx.containers.get(e.containerId)?.name ?? e.containerId);
        throw new ForbiddenError(
          `containers of this host are on global networks (${[...new Set(names)].join(", ")}): disconnect or remove them first`,
        );
      }
      const member = cluster.config.member;
      await cluster.withdraw();
      if (member) await cluster.removeMember(member.name);
      await cluster.close();
      if (member) {
        await this.etcd.stop();
        this.etcd.removeData();
      }
      removeClusterConfig(this.ctx.paths.dataRoot);
      this.ctx.cluster = undefined;
      this.announce("left");
      for (const net of [...this.ctx.networks.values()]) {
        if (net.scope === "global") await this.sync.forget(net.id);
      }
    });
  }

  info(): ClusterInfo {
    const cluster = this.ctx.cluster;
    if (!cluster) return { NodeName: this.o.nodeName, Role: "none", Addr: "", Hosts: [] };
    const names = new Set([...cluster.members.keys(), ...cluster.hosts.keys()]);
    return {
      NodeName: cluster.nodeName,
      Role: cluster.config.member ? "member" : "client",
      Addr: cluster.advertiseAddr,
      Hosts: [...names].sort(byHostName).map((name) => {
        const live = cluster.hosts.get(name);
        const member = cluster.members.get(name);
        return {
          Name: name,
          Addr: live?.addr ?? member?.addr ?? "",
          Role: member?.role ?? "client",
          State: live ? "ready" : "down",
          Self: name === cluster.nodeName,
        };
      }),
    };
  }

  /** Stops following; the host's keys expire with its lease, its etcd member keeps running. */
  async close(): Promise<void> {
    await this.ctx.cluster?.close();
  }

  private refuseIfJoined(): void {
    if (this.ctx.cluster) {
      throw new ConflictError(
        `this host is already in a cluster (as ${this.ctx.cluster.nodeName}); run \`ctnet cluster leave\` first`,
      );
    }
  }

  private memberSpec(addr: string, initialCluster: string, state: "new" | "existing"): EtcdMemberSpec {
    return {
      name: this.o.nodeName,
      clientUrl: `http://${addr}:${CLIENT_PORT}`,
      peerUrl: peerUrl(addr),
      initialCluster,
      initialState: state,
    };
  }

  private async checkAdvertiseAddr(given: string | undefined): Promise<string> {
    const addr = given ?? this.o.advertiseAddr ?? (await this.detectAdvertiseAddr());
    if (!isIPv4(addr))
      throw new InvalidParameterError(`invalid advertise address "${addr}": an IPv4 address is needed`);
    const held = (await this.ctx.host.listAddresses()).some((a) => a.cidr.startsWith(`${addr}/`));
    if (!held) throw new InvalidParameterError(`advertise address ${addr} is not an address of this host`);
    return addr;
  }

  /** The one IPv4 address of this host outside loopback and ctnet's own bridges, as swarm picks it. */
  private async detectAdvertiseAddr(): Promise<string> {
    const ours = new Set(
      (await this.ctx.host.listLinks()).filter((l) => l.alias?.startsWith("ctnet:")).map((l) => l.name),
    );
    const candidates = (await this.ctx.host.listAddresses())
      .filter((a) => a.family === 4 && a.ifname !== "lo" && !ours.has(a.ifname))
      .map((a) => a.cidr.split("/")[0] ?? "");
    if (candidates.length === 1 && candidates[0]) return candidates[0];
    throw new InvalidParameterError(
      candidates.length === 0
        ? "this host has no address to advertise to the cluster: give --advertise-addr"
        : `this host has several addresses (${candidates.join(", ")}): choose one with --advertise-addr`,
    );
  }
}

const peerUrl = (addr: string) => `http://${addr}:${PEER_PORT}`;

/** "IP:PORT", "etcd://IP:PORT" or "http://IP:PORT" → etcd's client URL. */
function storeUrl(text: string): string {
  const m = /^(?:(?:etcd|http):\/\/)?([^/:]+)(?::(\d+))?$/.exec(text.trim());
  if (!m?.[1]) throw new InvalidParameterError(`invalid cluster address "${text}": use HOST:PORT`);
  return `http://${m[1]}:${m[2] ?? CLIENT_PORT}`;
}

/** host2 before host10. */
const byHostName = (a: string, b: string) => a.localeCompare(b, undefined, { numeric: true });
