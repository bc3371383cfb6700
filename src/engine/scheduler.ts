/**
 * Task placement as one pure function of the cluster's state: which tasks to create, move, mark
 * for shutdown or delete so that every service runs its replicas on the hosts that are up. The
 * leader (engine/service-leader.ts) feeds it the store's mirror and writes what it returns.
 */
import type { ServiceRecord, TaskRecord, TaskStatus } from "../cluster/types.js";

export interface PlanInput {
  /** hosts that are up (their lease key exists) */
  hosts: Iterable<string>;
  services: Iterable<ServiceRecord>;
  tasks: Iterable<TaskRecord>;
  /** task id → what its host reports; a dead host's statuses are gone with its lease */
  statuses: ReadonlyMap<string, TaskStatus>;
  now: string;
  newId: () => string;
}

export interface Plan {
  /** tasks to write: new ones, moved or placed ones, ones now meant to shut down */
  put: TaskRecord[];
  /** ids of tasks to delete */
  remove: string[];
}

/** Docker's words for a task no host can take. */
export function noSuitableNode(portBusyOn: number): string {
  if (portBusyOn === 0) return "no suitable node";
  return `no suitable node (host-mode port already in use on ${portBusyOn} node${portBusyOn === 1 ? "" : "s"})`;
}

const portKey = (p: { protocol: string; published: number }) => `${p.protocol}/${p.published}`;

const byHostName = (a: string, b: string) => a.localeCompare(b, undefined, { numeric: true });

/**
 * Keeps each service at its replica count. Tasks on hosts that are gone are replaced (a new task in
 * the same slot); surplus tasks go, pending ones first, then from the host with most tasks of the
 * service, highest slot first. A task goes to the host with the fewest tasks of its service, then
 * the fewest tasks overall, then the first by name; never to a host where a task (of any service)
 * already publishes one of its host-mode ports. A task with no such host stays pending, saying why.
 * A task meant to shut down is deleted once its host no longer reports it.
 */
export function plan(input: PlanInput): Plan {
  const hosts = [...input.hosts].sort(byHostName);
  const live = new Set(hosts);
  const services = new Map([...input.services].map((s) => [s.id, s]));
  const put = new Map<string, TaskRecord>();
  const remove: string[] = [];
  const reported = (t: TaskRecord) => input.statuses.has(t.id) && live.has(t.host);

  const total = new Map<string, number>(hosts.map((h) => [h, 0]));
  const perService = new Map<string, Map<string, number>>();
  const portsOn = new Map<string, Set<string>>(hosts.map((h) => [h, new Set()]));
  const hostPorts = (s: ServiceRecord | undefined) =>
    (s?.ports ?? []).filter((p) => p.mode === "host").map(portKey);
  const count = (t: TaskRecord, delta: 1 | -1) => {
    if (!live.has(t.host)) return;
    total.set(t.host, (total.get(t.host) ?? 0) + delta);
    const mine = perService.get(t.serviceId) ?? new Map<string, number>();
    perService.set(t.serviceId, mine);
    mine.set(t.host, (mine.get(t.host) ?? 0) + delta);
    const used = portsOn.get(t.host);
    for (const p of hostPorts(services.get(t.serviceId))) {
      if (delta > 0) used?.add(p);
      else used?.delete(p);
    }
  };

  const byService = new Map<string, TaskRecord[]>();
  for (const t of input.tasks) {
    const list = byService.get(t.serviceId) ?? [];
    list.push(t);
    byService.set(t.serviceId, list);
    if (t.desired === "running" && services.has(t.serviceId)) count(t, 1);
  }

  const shutDown = (t: TaskRecord) => {
    if (reported(t)) put.set(t.id, { ...t, desired: "shutdown", pending: "" });
    else remove.push(t.id);
  };

  for (const [serviceId, tasks] of byService) {
    if (services.has(serviceId)) continue;
    for (const t of tasks) {
      if (t.desired === "running") shutDown(t);
      else if (!reported(t)) remove.push(t.id);
    }
  }

  const ordered = [...services.values()].sort(
    (a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id),
  );
  for (const s of ordered) {
    const tasks = byService.get(s.id) ?? [];
    const active: TaskRecord[] = [];
    const unplaced: TaskRecord[] = [];
    for (const t of tasks) {
      if (t.desired !== "running") {
        if (!reported(t)) remove.push(t.id);
      } else if (t.host === "") {
        unplaced.push(t);
      } else if (!live.has(t.host)) {
        remove.push(t.id);
        unplaced.push({ ...t, id: input.newId(), host: "", pending: "", created: input.now });
      } else {
        active.push(t);
      }
    }
    const mine = () => perService.get(s.id) ?? new Map<string, number>();

    let surplus = active.length + unplaced.length - s.replicas;
    unplaced.sort((a, b) => b.slot - a.slot);
    while (surplus > 0 && unplaced.length > 0) {
      const t = unplaced.shift() as TaskRecord;
      if (tasks.some((x) => x.id === t.id)) remove.push(t.id);
      surplus--;
    }
    while (surplus > 0) {
      active.sort(
        (a, b) =>
          (mine().get(b.host) ?? 0) - (mine().get(a.host) ?? 0) ||
          b.slot - a.slot ||
          a.id.localeCompare(b.id),
      );
      const t = active.shift() as TaskRecord;
      count(t, -1);
      shutDown(t);
      surplus--;
    }

    const slots = new Set([...active, ...unplaced].map((t) => t.slot));
    for (let n = active.length + unplaced.length, slot = 1; n < s.replicas; slot++) {
      if (slots.has(slot)) continue;
      unplaced.push({
        id: input.newId(),
        serviceId: s.id,
        slot,
        host: "",
        desired: "running",
        pending: "",
        created: input.now,
      });
      n++;
    }

    const ports = hostPorts(s);
    unplaced.sort((a, b) => a.slot - b.slot);
    for (const t of unplaced) {
      const fits = hosts.filter((h) => !ports.some((p) => portsOn.get(h)?.has(p)));
      const host = fits.sort(
        (a, b) =>
          (mine().get(a) ?? 0) - (mine().get(b) ?? 0) ||
          (total.get(a) ?? 0) - (total.get(b) ?? 0) ||
          byHostName(a, b),
      )[0];
      const next: TaskRecord = host
        ? { ...t, host, pending: "" }
        : { ...t, host: "", pending: noSuitableNode(hosts.length - fits.length) };
      if (host) count(next, 1);
      const before = tasks.find((x) => x.id === t.id);
      if (!before || before.host !== next.host || before.pending !== next.pending) put.set(next.id, next);
    }
  }
  return { put: [...put.values()], remove };
}
