/**
 * What a lab is made of, written down before each piece is made so that `lab down` can remove a
 * half-built lab from its state file alone. One JSON file per lab in its run directory; the
 * per-lab underlay subnet is claimed with a file created exclusively, so two labs started at the
 * same moment never get the same one.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../atomic-file.js";
import { ConflictError, InvalidParameterError, NotFoundError } from "../errors.js";

export const LAB_RUN_ROOT = "/run/ctnet-lab";
export const LAB_DATA_ROOT = "/var/lib/ctnet-lab";
/** Dot-prefixed: no lab name starts with a dot, so it never collides with a lab's directory. */
const SUBNET_CLAIMS = join(LAB_RUN_ROOT, ".subnets");
export const DEFAULT_LAB = "lab";
export const UNDERLAY_BRIDGE = "underlay";
/** 100.64.0.0/10 (shared address space) is outside every pool ctnet hands out, and no lab's traffic leaves its namespaces. */
const UNDERLAY_PREFIX = "100.64";
/** The lab namespace's own address on the underlay: the hosts' daemons forward DNS there. */
export const LAB_ADDRESS_OCTET = 254;
export const MAX_HOSTS = 64;

/**
 * Dashes are left out of lab and machine names so that `ctlab-<lab>-<member>` reads back one way
 * only: lab "a" with a machine "b" would otherwise take lab "a-b"'s namespace.
 */
const LAB_NAME = /^[a-z0-9][a-z0-9_]{0,31}$/;
/** Also the name of the machine's port on the underlay bridge, hence 15 characters at most. */
const MACHINE_NAME = /^[a-z][a-z0-9_]{0,14}$/;

export interface HostState {
  name: string;
  netns: string;
  addr: string;
  dataRoot: string;
  execRoot: string;
  socket: string;
  log: string;
  /** the daemon's pid, once started */
  pid?: number;
}

export interface MachineState {
  name: string;
  netns: string;
  addr: string;
}

export interface LabState {
  name: string;
  /** K of the underlay 100.64.K.0/24 */
  index: number;
  subnet: string;
  /** the lab namespace, which holds the underlay bridge */
  netns: string;
  labAddr: string;
  runDir: string;
  dataDir: string;
  /** the daemons' log level, kept for a host started again */
  logLevel: string;
  /** etcd client address of the cluster's first member, once formed */
  clusterAddr?: string;
  hosts: HostState[];
  machines: MachineState[];
}

export function checkLabName(name: string): void {
  if (!LAB_NAME.test(name))
    throw new InvalidParameterError(
      `invalid lab name ${JSON.stringify(name)}: use 1 to 32 lower-case letters, digits and underscores`,
    );
}

export function checkMachineName(lab: LabState, name: string): void {
  if (!MACHINE_NAME.test(name))
    throw new InvalidParameterError(
      `invalid machine name ${JSON.stringify(name)}: use a lower-case letter, then up to 14 lower-case letters, digits and underscores`,
    );
  if (/^host\d+$/.test(name) || name === UNDERLAY_BRIDGE || name === "lo")
    throw new InvalidParameterError(`machine name ${JSON.stringify(name)} is reserved`);
  if (lab.hosts.some((h) => h.name === name) || lab.machines.some((m) => m.name === name))
    throw new ConflictError(`lab ${lab.name} already has a machine named ${name}`);
}

const runDirOf = (name: string) => join(LAB_RUN_ROOT, name);
const stateFile = (name: string) => join(runDirOf(name), "lab.json");
export const netnsPath = (netns: string) => `/run/netns/${netns}`;

export function underlayAddr(lab: LabState, octet: number): string {
  return `${UNDERLAY_PREFIX}.${lab.index}.${octet}`;
}

/** The lab's description of host `i` (1-based); nothing is made. */
export function hostState(lab: LabState, i: number): HostState {
  const name = `host${i}`;
  const runDir = join(lab.runDir, name);
  return {
    name,
    netns: `${lab.netns}-${name}`,
    addr: underlayAddr(lab, i),
    dataRoot: join(lab.dataDir, name),
    execRoot: runDir,
    socket: join(runDir, "ctnet.sock"),
    log: join(lab.dataDir, `${name}.log`),
  };
}

/** The lowest underlay address no host or machine of the lab has. */
export function nextFreeOctet(lab: LabState): number {
  const used = new Set([...lab.hosts, ...lab.machines].map((m) => Number(m.addr.split(".")[3])));
  for (let octet = 1; octet < LAB_ADDRESS_OCTET; octet++) if (!used.has(octet)) return octet;
  throw new ConflictError(`lab ${lab.name} has no free underlay address left on ${lab.subnet}`);
}

/**
 * Claims the lab's name (its run directory, made exclusively) and a free underlay subnet, and
 * writes the first state. Throws ConflictError when a lab of that name exists.
 */
export function createLab(name: string, logLevel: string): LabState {
  checkLabName(name);
  mkdirSync(LAB_RUN_ROOT, { recursive: true });
  const runDir = runDirOf(name);
  try {
    mkdirSync(runDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST")
      throw new ConflictError(
        `lab ${name} already exists (remove it with: ctnet lab down${name === DEFAULT_LAB ? "" : ` --name ${name}`})`,
      );
    throw err;
  }
  try {
    const index = claimSubnet(name);
    const lab: LabState = {
      name,
      index,
      subnet: `${UNDERLAY_PREFIX}.${index}.0/24`,
      netns: `ctlab-${name}`,
      labAddr: `${UNDERLAY_PREFIX}.${index}.${LAB_ADDRESS_OCTET}`,
      runDir,
      dataDir: join(LAB_DATA_ROOT, name),
      logLevel,
      hosts: [],
      machines: [],
    };
    // A data directory without a run directory is from before a restart of the machine: its
    // daemons' records (containers, cluster membership) describe nothing that exists any more.
    rmSync(lab.dataDir, { recursive: true, force: true });
    saveLab(lab);
    return lab;
  } catch (err) {
    rmSync(runDir, { recursive: true, force: true });
    throw err;
  }
}

function claimSubnet(name: string): number {
  mkdirSync(SUBNET_CLAIMS, { recursive: true });
  for (let index = 0; index < 256; index++) {
    try {
      writeFileSync(join(SUBNET_CLAIMS, String(index)), name, { flag: "wx" });
      return index;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  throw new ConflictError(`no free lab subnet left in ${UNDERLAY_PREFIX}.0.0/16: remove a lab first`);
}

/** Gives back the subnets claimed by lab `name` (read from the claims, so no state is needed). */
export function releaseSubnets(name: string): void {
  let claims: string[];
  try {
    claims = readdirSync(SUBNET_CLAIMS);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const claim of claims) {
    const path = join(SUBNET_CLAIMS, claim);
    try {
      if (readFileSync(path, "utf8") === name) rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

export function saveLab(lab: LabState): void {
  writeFileAtomic(stateFile(lab.name), `${JSON.stringify(lab, null, 2)}\n`);
}

export function loadLab(name: string): LabState {
  checkLabName(name);
  let text: string;
  try {
    text = readFileSync(stateFile(name), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError(`no lab named ${name}`);
    throw err;
  }
  return JSON.parse(text) as LabState;
}

/** Every lab with a state file, by name. */
export function listLabs(): LabState[] {
  let names: string[];
  try {
    names = readdirSync(LAB_RUN_ROOT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const labs: LabState[] = [];
  for (const name of names.filter((n) => LAB_NAME.test(n)).sort()) {
    try {
      labs.push(loadLab(name));
    } catch (err) {
      // A lab directory whose state is not written yet is one being created right now.
      if (!(err instanceof NotFoundError)) throw err;
    }
  }
  return labs;
}

export function findMember(lab: LabState, name: string): HostState | MachineState {
  const member = lab.hosts.find((h) => h.name === name) ?? lab.machines.find((m) => m.name === name);
  if (!member) {
    const names = [...lab.hosts, ...lab.machines].map((m) => m.name).join(", ");
    throw new NotFoundError(
      `lab ${lab.name} has no host or machine named ${name} (it has: ${names || "none"})`,
    );
  }
  return member;
}

export function isHost(member: HostState | MachineState): member is HostState {
  return "socket" in member;
}
