import type { Cluster, ServiceChange } from "../cluster/cluster.js";
import { LEADER, taskKey } from "../cluster/keys.js";
import type { TaskRecord } from "../cluster/types.js";
import { log } from "../log.js";
import type { EngineContext } from "./context.js";
import { plan } from "./scheduler.js";
import { newObjectId } from "./swarm.js";

/**
 * How often the leader plans even when nothing in the store changed: the hosts' own keys bring no
 * event to the services layer, so a host that joins is seen (and pending tasks placed) by then.
 */
const TICK_MS = 1000;
/** etcd refuses transactions of more than 128 operations by default. */
const OPS_PER_TXN = 100;

/**
 * The scheduler, run by one host at a time: the one whose lease holds `/ctnet/leader`, created by
 * compare-and-swap. When the leader's host dies its key goes with its lease, and the others race
 * to take it. Every write of the leader is guarded by its still holding the key on that lease, so
 * a leader that lost its seat without hearing of it yet writes nothing.
 */
export class ServiceLeader {
  /** the lease this host leads on, while it does */
  private lease: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private again = false;

  constructor(private readonly ctx: EngineContext) {}

  get leading(): boolean {
    return this.lease !== undefined;
  }

  onChange(change: ServiceChange | { what: "joined" } | { what: "left" }): void {
    if (change.what === "left") {
      this.lease = undefined;
      this.stopTicking();
      return;
    }
    if (change.what === "joined") {
      this.startTicking();
      void this.campaign();
      return;
    }
    if (change.what === "leader") {
      const self = this.ctx.cluster?.nodeName;
      if (change.kind === "delete" || change.leader !== self) this.lease = undefined;
      if (change.kind === "delete") void this.campaign();
      return;
    }
    if (this.leading) this.schedule();
  }

  close(): void {
    this.stopTicking();
    this.lease = undefined;
  }

  private startTicking(): void {
    this.stopTicking();
    this.timer = setInterval(() => {
      if (this.leading) this.schedule();
      else if (this.ctx.cluster && !this.ctx.cluster.leader) void this.campaign();
    }, TICK_MS);
    this.timer.unref();
  }

  private stopTicking(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Tries to take the leader's key; the host leads from then on, until the key is gone. */
  private async campaign(): Promise<void> {
    const cluster = this.ctx.cluster;
    if (!cluster || this.leading) return;
    try {
      const lease = await cluster.currentLease();
      const txn = await cluster.etcd
        .if(LEADER, "Create", "==", 0)
        .then(cluster.etcd.put(LEADER).value(cluster.nodeName).lease(lease))
        .commit();
      if (!txn.succeeded || this.ctx.cluster !== cluster) return;
      this.lease = lease;
      cluster.leader = cluster.nodeName;
      log.info({ node: cluster.nodeName }, "this host now schedules the cluster's services");
      this.schedule();
    } catch (err) {
      log.warn({ err: (err as Error).message }, "cannot take the scheduler's seat");
    }
  }

  /** Plans again soon, once: changes arriving together make one plan. */
  private schedule(): void {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    setImmediate(() => {
      void this.run().finally(() => {
        this.busy = false;
        if (this.again) {
          this.again = false;
          if (this.leading) this.schedule();
        }
      });
    });
  }

  private async run(): Promise<void> {
    const cluster = this.ctx.cluster;
    const lease = this.lease;
    if (!cluster || !lease) return;
    const p = plan({
      hosts: cluster.hosts.keys(),
      services: cluster.services.values(),
      tasks: cluster.tasks.values(),
      statuses: cluster.taskStatuses,
      now: new Date().toISOString(),
      newId: newObjectId,
    });
    const ops = [...p.put.map((t) => ({ put: t })), ...p.remove.map((id) => ({ remove: id }))];
    for (let i = 0; i < ops.length; i += OPS_PER_TXN) {
      const chunk = ops.slice(i, i + OPS_PER_TXN);
      if (!(await this.write(cluster, lease, chunk))) return;
    }
  }

  /**
   * Writes one batch if this host still leads on `lease`, and applies it to the mirror at once so
   * that the next plan, which may come before the watch echoes these writes, does not redo them.
   */
  private async write(
    cluster: Cluster,
    lease: string,
    chunk: ({ put: TaskRecord } | { remove: string })[],
  ): Promise<boolean> {
    const etcd = cluster.etcd;
    try {
      const txn = await etcd
        .if(LEADER, "Lease", "==", lease)
        .then(
          ...chunk.map((op) =>
            "put" in op
              ? etcd.put(taskKey(op.put.id)).value(JSON.stringify(op.put))
              : etcd.delete().key(taskKey(op.remove)),
          ),
        )
        .commit();
      if (!txn.succeeded) {
        log.warn({ node: cluster.nodeName }, "this host no longer schedules the cluster's services");
        this.lease = undefined;
        return false;
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, "cannot write the scheduler's decisions; trying again");
      return false;
    }
    for (const op of chunk) {
      if ("put" in op) cluster.tasks.set(op.put.id, op.put);
      else cluster.tasks.delete(op.remove);
    }
    return true;
  }
}
