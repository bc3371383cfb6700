/**
 * The lab's operations, in the order their pieces must be made and unmade. Every piece is
 * written to the lab's state before it is made, and `down` also finds the lab's namespaces by
 * name, so a lab left half-built by a crash or an interrupted `up` is removed like a whole one.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import { ConflictError, InvalidParameterError, NotFoundError } from "../errors.js";
import {
  BIN_DIR,
  clusterInit,
  clusterJoin,
  daemonAnswers,
  hostUrl,
  isDaemonOf,
  removeContainers,
  startDaemon,
} from "./daemons.js";
import {
  checkMachineName,
  createLab,
  findMember,
  type HostState,
  hostState,
  isHost,
  LAB_DATA_ROOT,
  LAB_RUN_ROOT,
  type LabState,
  loadLab,
  MAX_HOSTS,
  type MachineState,
  netnsPath,
  nextFreeOctet,
  releaseSubnets,
  saveLab,
  underlayAddr,
} from "./state.js";
import {
  createUnderlay,
  deleteNetns,
  labNamespaces,
  mountsUnder,
  netnsExists,
  plugIn,
  processesIn,
  processesMentioning,
  terminate,
  unlinkFromUnderlay,
  unmount,
  waitReaped,
} from "./underlay.js";

export interface UpOptions {
  name: string;
  hosts: number;
  /** hosts 1..members run an etcd member; the others join as clients */
  members: number;
  /** form the cluster (init on host1, join on the others) */
  cluster: boolean;
  logLevel: string;
}

export async function labUp(o: UpOptions): Promise<LabState> {
  if (!Number.isInteger(o.hosts) || o.hosts < 1 || o.hosts > MAX_HOSTS)
    throw new InvalidParameterError(`--hosts must be a whole number from 1 to ${MAX_HOSTS}`);
  if (!Number.isInteger(o.members) || o.members < 1 || o.members > o.hosts)
    throw new InvalidParameterError(
      `--members must be a whole number from 1 to the number of hosts (${o.hosts})`,
    );
  const lab = createLab(o.name, o.logLevel);
  try {
    createUnderlay(lab);
    for (let i = 1; i <= o.hosts; i++) {
      const host = hostState(lab, i);
      lab.hosts.push(host);
      saveLab(lab);
      plugIn(lab, host);
    }
    const started = await Promise.allSettled(lab.hosts.map((h) => startDaemon(lab, h)));
    saveLab(lab);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
    if (o.cluster) await formCluster(lab, o.members);
    return lab;
  } catch (err) {
    try {
      await teardown(lab);
    } catch (cleanup) {
      (err as Error).message += `\n(cleaning up the lab failed too: ${(cleanup as Error).message})`;
    }
    throw err;
  }
}

/** host1 starts the first etcd member; members join one at a time, as etcd adds them; clients after. */
async function formCluster(lab: LabState, members: number): Promise<void> {
  const [first, ...others] = lab.hosts;
  const addr = await clusterInit(first);
  lab.clusterAddr = addr;
  saveLab(lab);
  for (const host of others.slice(0, members - 1)) await clusterJoin(host, addr, true);
  await Promise.all(others.slice(members - 1).map((host) => clusterJoin(host, addr, false)));
}

/**
 * Removes the lab: containers through their daemons, then the daemons, every other process in
 * the lab's namespaces (etcd members, servers started with `lab exec`), whatever containers a
 * dead daemon left running, mounts, namespaces (their links go with them), directories, and the
 * subnet claim. Resolves with what a daemon failed to do, which was then done the hard way.
 */
export async function labDown(name: string): Promise<string[]> {
  let lab: LabState;
  try {
    lab = loadLab(name);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
    const dirs = [join(LAB_RUN_ROOT, name), join(LAB_DATA_ROOT, name)].filter((d) => existsSync(d));
    const namespaces = labNamespaces(name);
    if (namespaces.length === 0 && dirs.length === 0) throw err;
    // No state, but pieces of the lab: an `up` killed before its first write, or a machine
    // restarted (/run is gone, /var/lib is not).
    await teardownNamespaces(namespaces);
    await sweepDirs(dirs);
    releaseSubnets(name);
    return [];
  }
  return teardown(lab);
}

/** Ends the processes that name `dirs` (containers' runners), unmounts what is under them, removes them. */
async function sweepDirs(dirs: string[]): Promise<void> {
  await terminate([...new Set(dirs.flatMap((d) => processesMentioning(`${d}/`)))], 2_000);
  for (const point of mountsUnder(dirs)) unmount(point);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

async function teardown(lab: LabState): Promise<string[]> {
  const removals = await Promise.all(
    lab.hosts.map(async (h) =>
      (await daemonAnswers(h))
        ? removeContainers(h).catch((err: Error) => [`${h.name}: listing containers: ${err.message}`])
        : [],
    ),
  );
  const daemons = lab.hosts.flatMap((h) => (h.pid !== undefined && isDaemonOf(h, h.pid) ? [h.pid] : []));
  await terminate(daemons, 10_000);
  const namespaces = [
    ...new Set(
      [...lab.hosts, ...lab.machines].map((m) => m.netns).concat(lab.netns, labNamespaces(lab.name)),
    ),
  ];
  await terminate(processesIn(namespaces.map(netnsPath)), 2_000);
  // A stopped host's daemon could not remove its containers: their processes sit in sandbox
  // namespaces under its exec root, and their runners mention the host's roots (swept below).
  const sandboxes = lab.hosts.flatMap((h) =>
    listDir(join(h.execRoot, "netns")).map((f) => join(h.execRoot, "netns", f)),
  );
  await terminate(processesIn(sandboxes), 2_000);
  await teardownNamespaces(namespaces.filter((n) => n !== lab.netns));
  deleteNetns(lab.netns);
  // The run directory last: it holds the state, which a `down` interrupted here still needs.
  await sweepDirs([lab.dataDir]);
  releaseSubnets(lab.name);
  await sweepDirs([lab.runDir]);
  return removals.flat();
}

async function teardownNamespaces(namespaces: string[]): Promise<void> {
  await terminate(processesIn(namespaces.map(netnsPath)), 2_000);
  for (const ns of namespaces) deleteNetns(ns);
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function hostOf(lab: LabState, name: string): HostState {
  const member = findMember(lab, name);
  if (!isHost(member))
    throw new InvalidParameterError(`${name} is a machine of lab ${lab.name}, not a ctnet host`);
  return member;
}

/**
 * A host failure: every process in the host's namespace (its daemon, its etcd member, anything
 * started there) is killed outright and the namespace deleted, links and all. Its containers live
 * in namespaces of their own and keep running, as after a daemon crash.
 */
export async function labStop(lab: LabState, name: string): Promise<void> {
  const host = hostOf(lab, name);
  if (!netnsExists(host.netns)) throw new ConflictError(`${name} of lab ${lab.name} is already stopped`);
  const pids = processesIn([netnsPath(host.netns)]);
  await terminate(pids, 0);
  await waitReaped(pids, 10_000);
  // Deleted from the bridge's side first: a namespace's links go asynchronously, and `lab start`
  // must find the port's name free.
  unlinkFromUnderlay(lab, host);
  deleteNetns(host.netns);
  host.pid = undefined;
  saveLab(lab);
}

/** Brings a stopped host back with the same uplink address; its daemon rejoins by itself. */
export async function labStart(lab: LabState, name: string): Promise<void> {
  const host = hostOf(lab, name);
  if (netnsExists(host.netns)) {
    if (await daemonAnswers(host)) throw new ConflictError(`${name} of lab ${lab.name} is running`);
  } else {
    plugIn(lab, host);
  }
  try {
    await startDaemon(lab, host);
  } finally {
    saveLab(lab);
  }
}

/** A plain namespace on the underlay (an "internet" server, a client), at the next free address. */
export function labMachine(lab: LabState, name: string): MachineState {
  checkMachineName(lab, name);
  const machine: MachineState = {
    name,
    netns: `${lab.netns}-${name}`,
    addr: underlayAddr(lab, nextFreeOctet(lab)),
  };
  lab.machines.push(machine);
  saveLab(lab);
  try {
    plugIn(lab, machine);
  } catch (err) {
    deleteNetns(machine.netns);
    lab.machines.pop();
    saveLab(lab);
    throw err;
  }
  return machine;
}

/**
 * The environment of a command run on a lab host: its daemon for ctnet and docker, ctnet's own
 * bin directory first on PATH.
 */
export function execEnv(
  member: HostState | MachineState,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    PATH: `${BIN_DIR}:${base.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
  };
  if (isHost(member)) {
    env.CTNET_HOST = hostUrl(member);
    env.DOCKER_HOST = hostUrl(member);
  } else {
    // A machine has no daemon: a command there must not talk to one by accident.
    delete env.CTNET_HOST;
    delete env.DOCKER_HOST;
  }
  return env;
}

/** Runs `command` in the member's namespace (nsenter --net, the machine's mount namespace kept); resolves with its exit status. */
export function labExec(lab: LabState, name: string, command: string[]): Promise<number> {
  const member = findMember(lab, name);
  if (!netnsExists(member.netns)) throw new ConflictError(`${name} of lab ${lab.name} is stopped`);
  return new Promise((resolve, reject) => {
    const child = spawn("nsenter", [`--net=${netnsPath(member.netns)}`, "--", ...command], {
      stdio: "inherit",
      env: execEnv(member),
    });
    // The command is the one to end when the lab exec is asked to: it would outlive it otherwise.
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on("SIGTERM", forward).on("SIGHUP", forward);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      process.off("SIGTERM", forward).off("SIGHUP", forward);
      // As a shell reports it: 128 + the signal's number.
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}

export type MemberStatus = "running" | "down" | "stopped" | "up";

export interface MemberView {
  name: string;
  kind: "host" | "machine";
  addr: string;
  /** host: running (daemon answers), down (namespace there, daemon not), stopped (`lab stop`); machine: up or stopped */
  status: MemberStatus;
  socket?: string;
}

export async function describeLab(lab: LabState): Promise<MemberView[]> {
  const hosts = await Promise.all(
    lab.hosts.map(
      async (h): Promise<MemberView> => ({
        name: h.name,
        kind: "host",
        addr: h.addr,
        status: !netnsExists(h.netns) ? "stopped" : (await daemonAnswers(h)) ? "running" : "down",
        socket: hostUrl(h),
      }),
    ),
  );
  const machines = lab.machines.map(
    (m): MemberView => ({
      name: m.name,
      kind: "machine",
      addr: m.addr,
      status: netnsExists(m.netns) ? "up" : "stopped",
    }),
  );
  return [...hosts, ...machines];
}
