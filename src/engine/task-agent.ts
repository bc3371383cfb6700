import type { Cluster, ServiceChange } from "../cluster/cluster.js";
import { taskStatusKey } from "../cluster/keys.js";
import type { ServiceRecord, TaskRecord, TaskStatus } from "../cluster/types.js";
import { NotFoundError } from "../errors.js";
import { log } from "../log.js";
import type { ApiPortMap } from "../ports/parse.js";
import { NO_STDIO } from "../runtime/console.js";
import type { ContainerCreateRequest, Containers } from "./containers.js";
import type { EngineContext } from "./context.js";
import type { EngineEvent } from "./events.js";
import { isIngress, TASK_LABELS } from "./swarm.js";
import type { ContainerRecord } from "./types.js";

/** Seconds a stopping task gets between SIGTERM and SIGKILL (Docker's default stop grace period). */
const STOP_GRACE_S = 10;
/** A failed task is started again after this, doubling with each failure in a row up to the maximum. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** A task that ran this long before failing starts its back-off afresh. */
const STEADY_MS = 10_000;
/** How often the agent looks again with nothing having happened (a write to the store that failed). */
const TICK_MS = 5000;

interface Failure {
  /** the container whose exit this counts ("" for a start that failed) */
  containerId: string;
  count: number;
  retryAt: number;
}

/**
 * This host's share of the services: for every task the scheduler assigned here, a container
 * (`NAME.SLOT.TASKID`, Docker's labels) started through the engine like any other, and a
 * TaskStatus on this host's lease saying how it is. A container whose process dies is reported
 * failed and replaced by a new one for the same task after a back-off; a task no longer meant to
 * run here is reported "shutdown", stopped and removed. Everything is derived again from the store's
 * mirror and the engine's containers on each change, so a restarted daemon takes its running task
 * containers back as they are.
 */
export class TaskAgent {
  /** tasks with a start or a stop in flight */
  private readonly busy = new Set<string>();
  private readonly failures = new Map<string, Failure>();
  /** ids of this host's task containers, as last seen */
  private ours = new Set<string>();
  private running = false;
  private again = false;
  private ticker: NodeJS.Timeout | undefined;
  private retry: { timer: NodeJS.Timeout; at: number } | undefined;

  constructor(
    private readonly ctx: EngineContext,
    private readonly containers: Containers,
  ) {}

  private readonly onEvent = (e: EngineEvent) => {
    if (e.Type === "container" && (e.Action === "die" || e.Action === "destroy") && this.ours.has(e.Actor.ID))
      this.schedule();
  };

  listen(): void {
    this.ctx.events.on("event", this.onEvent);
  }

  close(): void {
    this.ctx.events.off("event", this.onEvent);
    if (this.ticker) clearInterval(this.ticker);
    if (this.retry) clearTimeout(this.retry.timer);
    this.ticker = undefined;
    this.retry = undefined;
  }

  onChange(change: ServiceChange | { what: "joined" } | { what: "left" }): void {
    if (change.what === "left") {
      if (this.ticker) clearInterval(this.ticker);
      this.ticker = undefined;
      // Tasks belong to the cluster this host left: their containers go.
      for (const [taskId, cs] of this.localTasks()) this.job(taskId, () => this.shutdown(taskId, cs));
      return;
    }
    if (change.what === "joined" && !this.ticker) {
      this.ticker = setInterval(() => this.schedule(), TICK_MS);
      this.ticker.unref();
    }
    this.schedule();
  }

  /** Looks again soon, once: changes arriving together make one pass. */
  private schedule(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    setImmediate(() => {
      void this.reconcile()
        .catch((err) => log.error({ err }, "task agent pass failed"))
        .finally(() => {
          this.running = false;
          if (this.again) {
            this.again = false;
            this.schedule();
          }
        });
    });
  }

  /** Task id → this host's containers for it. */
  private localTasks(): Map<string, ContainerRecord[]> {
    const out = new Map<string, ContainerRecord[]>();
    for (const c of this.ctx.containers.values()) {
      const taskId = c.labels[TASK_LABELS.taskId];
      if (!taskId) continue;
      out.set(taskId, [...(out.get(taskId) ?? []), c]);
    }
    this.ours = new Set([...out.values()].flat().map((c) => c.id));
    return out;
  }

  private async reconcile(): Promise<void> {
    const cluster = this.ctx.cluster;
    if (!cluster) return;
    const me = cluster.nodeName;
    const local = this.localTasks();
    const mine = (t: TaskRecord | undefined): t is TaskRecord =>
      t !== undefined && t.host === me && t.desired === "running" && cluster.services.has(t.serviceId);

    for (const [taskId, cs] of local) {
      if (!this.busy.has(taskId) && !mine(cluster.tasks.get(taskId)))
        this.job(taskId, () => this.shutdown(taskId, cs));
    }
    for (const t of cluster.tasks.values()) {
      const s = cluster.services.get(t.serviceId);
      if (!mine(t) || !s || this.busy.has(t.id)) continue;
      const cs = local.get(t.id) ?? [];
      const live = cs.find((c) => c.state.status === "running");
      if (live) {
        const stale = cs.filter((c) => c !== live);
        if (stale.length > 0) this.job(t.id, () => this.removeAll(stale));
        else await this.report(cluster, t.id, "running", "started", live);
        continue;
      }
      const dead = cs[0];
      if (dead) {
        this.noteExit(t.id, dead);
        const code = dead.state.exitCode;
        await this.report(
          cluster,
          t.id,
          "failed",
          code === 0 ? "task exited (0)" : `task: non-zero exit (${code})`,
          dead,
        );
      }
      const wait = (this.failures.get(t.id)?.retryAt ?? 0) - Date.now();
      if (wait > 0) this.retryIn(wait);
      else this.job(t.id, () => this.start(cluster, s, t, cs));
    }
    for (const st of [...cluster.taskStatuses.values()]) {
      if (st.host === me && !this.busy.has(st.id) && !local.has(st.id) && !mine(cluster.tasks.get(st.id)))
        await this.dropStatus(cluster, st.id);
    }
    for (const taskId of this.failures.keys())
      if (!mine(cluster.tasks.get(taskId))) this.failures.delete(taskId);
  }

  /** Runs a start or stop of one task in the background; the agent looks again when it ends. */
  private job(taskId: string, fn: () => Promise<void>): void {
    this.busy.add(taskId);
    void fn()
      .catch((err) => log.error({ err, task: taskId }, "task operation failed"))
      .finally(() => {
        this.busy.delete(taskId);
        this.schedule();
      });
  }

  private retryIn(ms: number): void {
    const at = Date.now() + ms;
    if (this.retry && this.retry.at <= at) return;
    if (this.retry) clearTimeout(this.retry.timer);
    const timer = setTimeout(() => {
      this.retry = undefined;
      this.schedule();
    }, ms);
    timer.unref();
    this.retry = { timer, at };
  }

  /** Counts a container's exit once; a task that had run steadily starts its back-off afresh. */
  private noteExit(taskId: string, c: ContainerRecord): void {
    const f = this.failures.get(taskId);
    if (f?.containerId === c.id) return;
    const ran = Date.parse(c.state.finishedAt) - Date.parse(c.state.startedAt);
    this.fail(taskId, c.id, f && !(ran >= STEADY_MS) ? f.count + 1 : 1);
  }

  private fail(taskId: string, containerId: string, count: number): void {
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** (count - 1), BACKOFF_MAX_MS);
    this.failures.set(taskId, { containerId, count, retryAt: Date.now() + delay });
  }

  private async start(
    cluster: Cluster,
    s: ServiceRecord,
    t: TaskRecord,
    old: ContainerRecord[],
  ): Promise<void> {
    await this.removeAll(old);
    await this.report(cluster, t.id, "starting", "starting");
    let id: string | undefined;
    try {
      const c = await this.containers.create(this.request(cluster, s, t));
      id = c.id;
      this.ours.add(id);
      await this.containers.start(id);
      const started = this.ctx.containers.get(id);
      if (started?.state.status === "running")
        await this.report(cluster, t.id, "running", "started", started);
      log.info({ task: t.id, service: s.name, slot: t.slot, container: c.name }, "task started");
    } catch (err) {
      const message = (err as Error).message;
      log.warn({ task: t.id, service: s.name, err: message }, "task failed to start");
      this.fail(t.id, "", (this.failures.get(t.id)?.count ?? 0) + 1);
      await this.report(cluster, t.id, "failed", message);
      if (id) await this.containers.remove(id, true).catch(() => undefined);
    }
  }

  private request(cluster: Cluster, s: ServiceRecord, t: TaskRecord): ContainerCreateRequest {
    const ingress = [...this.ctx.networks.values()].find(isIngress);
    const meshed = s.ports.some((p) => p.mode === "ingress");
    // This host hears of a new ingress network through the store; the task waits for it.
    if (meshed && !ingress) throw new NotFoundError("network ingress not found");
    const nets = [...s.networks, ...(meshed && ingress ? [ingress.id] : [])];
    const exposed: Record<string, object> = {};
    const bindings: ApiPortMap = {};
    for (const p of s.ports) {
      if (p.mode !== "host") continue;
      const key = `${p.target}/${p.protocol}`;
      exposed[key] = {};
      bindings[key] = [...(bindings[key] ?? []), { HostIp: "", HostPort: String(p.published) }];
    }
    const name = `${s.name}.${t.slot}.${t.id}`;
    return {
      name,
      image: s.image,
      cmd: s.cmd,
      entrypoint: s.entrypoint ?? [],
      entrypointSet: s.entrypoint !== undefined,
      workingDir: "",
      env: s.env,
      labels: {
        [TASK_LABELS.serviceName]: s.name,
        [TASK_LABELS.serviceId]: s.id,
        [TASK_LABELS.taskId]: t.id,
        [TASK_LABELS.taskName]: name,
        [TASK_LABELS.nodeId]: cluster.nodeName,
      },
      networkMode: nets[0] ?? "bridge",
      dns: [],
      autoRemove: false,
      stdio: NO_STDIO,
      endpoints: Object.fromEntries(nets.slice(1).map((id) => [id, { aliases: [] }])),
      exposedPorts: exposed,
      portBindings: bindings,
      publishAll: false,
    };
  }

  /**
   * Says the task is shutting down (so that load balancers drop it) before its container stops,
   * then removes the container and the report.
   */
  private async shutdown(taskId: string, cs: ContainerRecord[]): Promise<void> {
    const cluster = this.ctx.cluster;
    const st = cluster?.taskStatuses.get(taskId);
    if (cluster && st?.host === cluster.nodeName && st.state !== "shutdown")
      await this.report(cluster, taskId, "shutdown", "shutdown", this.ctx.containers.get(st.containerId));
    await this.removeAll(cs);
    if (cluster) await this.dropStatus(cluster, taskId);
    this.failures.delete(taskId);
    log.info({ task: taskId }, "task shut down");
  }

  private async removeAll(cs: ContainerRecord[]): Promise<void> {
    for (const c of cs) {
      if (c.state.status === "running") await this.containers.stop(c.id, STOP_GRACE_S);
      await this.containers.remove(c.id, true);
    }
  }

  /** Writes the task's status on this host's lease, unless the store has it already. */
  private async report(
    cluster: Cluster,
    taskId: string,
    state: TaskStatus["state"],
    message: string,
    c?: ContainerRecord,
  ): Promise<void> {
    const addresses: Record<string, string> = {};
    for (const ep of c ? this.ctx.endpointsOf(c.id) : []) {
      if (ep.ipv4 && this.ctx.networks.get(ep.networkId)?.scope === "global")
        addresses[ep.networkId] = ep.ipv4;
    }
    // Since when the task is in this state: a report written again (a new lease) keeps its time.
    const since =
      state === "running" ? c?.state.startedAt : state === "failed" ? c?.state.finishedAt : undefined;
    const status: TaskStatus = {
      id: taskId,
      host: cluster.nodeName,
      state,
      message,
      containerId: c?.id ?? "",
      addresses,
      updated: since ?? new Date().toISOString(),
    };
    const was = cluster.taskStatuses.get(taskId);
    if (
      was &&
      was.host === status.host &&
      was.state === state &&
      was.message === message &&
      was.containerId === status.containerId &&
      JSON.stringify(was.addresses) === JSON.stringify(addresses)
    )
      return;
    await cluster.etcd
      .put(taskStatusKey(taskId))
      .value(JSON.stringify(status))
      .lease(await cluster.currentLease());
    cluster.taskStatuses.set(taskId, status);
  }

  private async dropStatus(cluster: Cluster, taskId: string): Promise<void> {
    if (cluster.taskStatuses.get(taskId)?.host !== cluster.nodeName) return;
    await cluster.etcd.delete().key(taskStatusKey(taskId));
    cluster.taskStatuses.delete(taskId);
  }
}
